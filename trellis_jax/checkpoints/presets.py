"""Named presets from the package's `trellis_jax/configs/` folder (installed with it as data): small JSON
files naming a checkpoint.

A preset file `trellis_jax/configs/<name>.json` holds {"description": str, "checkpoint": "default" | a path
relative to the repository root, "dtype": optional}. Paths point into a source checkout (the tiny test
checkpoints live in tests/fixtures), so only "default" presets work from an installed wheel. `resolve_preset(name)` returns (checkpoint spec,
dtype or None); an unknown name raises CheckpointError listing the known ones.
"""

from __future__ import annotations

import json
import os

from trellis_jax.checkpoints.errors import CheckpointError

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_ROOT = os.path.dirname(PACKAGE_DIR)
CONFIGS_DIR = os.path.join(PACKAGE_DIR, "configs")


def preset_names() -> list[str]:
    if not os.path.isdir(CONFIGS_DIR):
        return []
    return sorted(f[:-5] for f in os.listdir(CONFIGS_DIR) if f.endswith(".json"))


def resolve_preset(name: str) -> tuple[str | None, str | None]:
    path = os.path.join(CONFIGS_DIR, name + ".json")
    if not os.path.isfile(path):
        raise CheckpointError(name, f"no such checkpoint file, directory or preset; presets: {preset_names()}")
    with open(path, encoding="utf-8") as f:
        try:
            preset = json.load(f)
        except json.JSONDecodeError as exc:
            raise CheckpointError(path, f"invalid JSON: {exc}") from exc
    checkpoint = preset.get("checkpoint")
    if not isinstance(checkpoint, str):
        raise CheckpointError(path, "preset needs a 'checkpoint' string ('default' or a path)")
    spec = None if checkpoint == "default" else os.path.join(REPO_ROOT, checkpoint)
    return spec, preset.get("dtype")
