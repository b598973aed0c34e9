"""Checkpoint tensor names -> the model's params pytree (shared by the GGUF and safetensors loaders).

Contract: `assemble_params(fetch, config, source)` asks `fetch(name)` for each tensor under its Hugging
Face name in torch layout ([out, in] for linear weights) as a numpy array, or None when absent; it
checks every shape, transposes linear weights to [in, out], stacks layers and casts to config.dtype.
A missing or mis-shaped tensor raises CheckpointError naming the source file and the tensor.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from trellis_jax.checkpoints.errors import CheckpointError

import jax.numpy as jnp

Fetch = Callable[[str], "np.ndarray | None"]

# our layer key -> (HF name inside model.layers.{i}., is a linear weight to transpose)
LAYER_TENSORS = {
    "attn_norm": ("input_layernorm.weight", False),
    "wq": ("self_attn.q_proj.weight", True),
    "wk": ("self_attn.k_proj.weight", True),
    "wv": ("self_attn.v_proj.weight", True),
    "wo": ("self_attn.o_proj.weight", True),
    "bq": ("self_attn.q_proj.bias", False),
    "bk": ("self_attn.k_proj.bias", False),
    "bv": ("self_attn.v_proj.bias", False),
    "mlp_norm": ("post_attention_layernorm.weight", False),
    "w_gate": ("mlp.gate_proj.weight", True),
    "w_up": ("mlp.up_proj.weight", True),
    "w_down": ("mlp.down_proj.weight", True),
}


def assemble_params(fetch: Fetch, config, source: str) -> dict:
    from trellis_jax.model import param_shapes  # the single statement of the layout

    shapes = param_shapes(config)
    dtype = jnp.dtype(config.dtype)
    params = {
        "embed": _cast(_tensor(fetch, "model.embed_tokens.weight", shapes["embed"], source), dtype),
        "final_norm": _cast(_tensor(fetch, "model.norm.weight", shapes["final_norm"], source), dtype),
        "layers": {key: _stacked(fetch, key, shape, config.num_layers, source, dtype)
                   for key, shape in shapes["layers"].items()},
    }
    if "lm_head" in shapes:
        head_shape = shapes["lm_head"][::-1]
        params["lm_head"] = _cast(_tensor(fetch, "lm_head.weight", head_shape, source).T, dtype)
    return params


def _stacked(fetch, key, shape, num_layers, source, dtype):
    name, transpose = LAYER_TENSORS[key]
    per_layer = shape[1:][::-1] if transpose else shape[1:]
    out = np.empty(shape, dtype)  # filled layer by layer: peak memory stays ~ one copy of the weights
    for i in range(num_layers):
        tensor = _tensor(fetch, f"model.layers.{i}.{name}", per_layer, source)
        out[i] = tensor.T if transpose else tensor
    return jnp.asarray(out)


def _tensor(fetch, name, shape, source):
    tensor = fetch(name)
    if tensor is None:
        raise CheckpointError(source, f"missing tensor {name!r}")
    if tuple(tensor.shape) != tuple(shape):
        raise CheckpointError(source, f"tensor {name!r} has shape {tuple(tensor.shape)}, expected {tuple(shape)}")
    return tensor


def _cast(array, dtype):
    return jnp.asarray(np.asarray(array).astype(dtype, copy=False))
