"""Checkpoint loaders: GGUF, Hugging Face safetensors directories and orbax -> LoadedModel.

Owns the mapping from checkpoint formats to the model's params pytree and default-model resolution.
Imports model, tokenizer, safetensors, orbax, and gguf lazily (the GPU image may lack gguf). Every bad
input raises CheckpointError (a ValueError) naming the file and the problem.
`python -m trellis_jax.checkpoints --out DIR` converts any checkpoint to a fast-loading orbax directory.
"""

from trellis_jax.checkpoints.default_model import default_gguf_path
from trellis_jax.checkpoints.errors import CheckpointError
from trellis_jax.checkpoints.load import load_model
from trellis_jax.checkpoints.loaded import LoadedModel
from trellis_jax.checkpoints.orbax_io import load_orbax, save_orbax
from trellis_jax.checkpoints.presets import preset_names

__all__ = [
    "load_model",
    "LoadedModel",
    "CheckpointError",
    "save_orbax",
    "load_orbax",
    "default_gguf_path",
    "preset_names",
]
