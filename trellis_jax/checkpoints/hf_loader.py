"""Hugging Face model directories -> (ModelConfig, params): `config.json` + `*.safetensors`.

Contract: `load_hf_weights(directory, dtype, host=False)` reads `config.json`, then the weights from
`model.safetensors.index.json` (sharded: its weight_map names the shard of every tensor) or else every
`*.safetensors` file in the directory. Tensors are read lazily by name, so only the ones the model needs
are touched. Errors are CheckpointError naming the file: no config, bad JSON, unknown architecture, no
weights, truncated/corrupt safetensors, missing tensor, wrong shape. The tokenizer is loaded elsewhere.
Tensors are read as numpy (safetensors' numpy reader holds bfloat16 too), so reading puts nothing on a
device; `host=True` keeps the assembled weights on the host as well (layout.assemble_params).
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from trellis_jax.checkpoints.errors import CheckpointError
from trellis_jax.checkpoints.layout import assemble_params

INDEX_FILE = "model.safetensors.index.json"


def read_json(path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as exc:
        raise CheckpointError(path, "file not found") from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(path, f"invalid JSON: {exc}") from exc


def load_hf_weights(directory, dtype: str = "float32", host: bool = False):
    """-> (ModelConfig, params) from a Hugging Face directory."""
    from trellis_jax.model import ModelConfig

    config_path = os.path.join(directory, "config.json")
    try:
        config = ModelConfig.from_hf_config(read_json(config_path), dtype=dtype)
    except (KeyError, ValueError, TypeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(config_path, f"bad model config: {exc}") from exc
    shard_of = _shard_map(directory)
    handles = {}

    def fetch(name):
        shard = shard_of.get(name)
        if shard is None:
            return None
        if shard not in handles:
            handles[shard] = _open_safetensors(shard)
        try:
            return np.asarray(handles[shard].get_tensor(name))
        except Exception as exc:
            raise CheckpointError(shard, f"cannot read tensor {name!r} (truncated or corrupt?): {exc}") from exc

    # Report a missing tensor against the file(s) that should have held it.
    source = (
        os.path.join(directory, INDEX_FILE)
        if os.path.exists(os.path.join(directory, INDEX_FILE))
        else ", ".join(sorted(set(shard_of.values())))
    )
    return config, assemble_params(fetch, config, source, host=host)


def _shard_map(directory) -> dict:
    """tensor name -> safetensors file path."""
    index_path = os.path.join(directory, INDEX_FILE)
    if os.path.exists(index_path):
        weight_map = read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(index_path, "no 'weight_map' object")
        return {name: os.path.join(directory, shard) for name, shard in weight_map.items()}
    files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
    if not files:
        raise CheckpointError(directory, "no *.safetensors weights (and no model.safetensors.index.json)")
    shard_of = {}
    for path in files:
        for name in _open_safetensors(path).keys():
            shard_of[name] = path
    return shard_of


def _open_safetensors(path):
    from safetensors import safe_open

    try:
        # numpy, not "flax": a flax tensor is a jax array, put whole on the default device as it is read.
        return safe_open(path, framework="numpy")
    except FileNotFoundError as exc:
        raise CheckpointError(path, "file not found (listed in the shard index)") from exc
    except Exception as exc:
        raise CheckpointError(path, f"not a readable safetensors file (truncated or corrupt?): {exc}") from exc
