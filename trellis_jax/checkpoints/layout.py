"""Checkpoint tensor names -> the model's params pytree (shared by the GGUF and safetensors loaders).

Contract: `assemble_params(fetch, config, source, display_name, host=False)` asks `fetch(name)` for each tensor under
its Hugging Face name in torch layout ([out, in] for linear weights) as a numpy array, or None when
absent; it checks every shape, transposes linear weights to [in, out], stacks layers and casts to
config.dtype. `fetch` may instead return a linear weight kept packed (`trellis_jax.model.quantized`,
already [in, out]): a layer's weights stay packed when every layer's is: stacked when in one format, else a
`quantized.LayerMix` (each format's layers stacked as they are, as Q4_K_M files mix Q4_K and Q6_K); when
only some layers are packed, those are dequantized (bit-faithfully) like the rest. A missing or mis-shaped tensor raises CheckpointError naming the source file and the
tensor as `display_name(hf_name)` spells it (the GGUF loader shows GGUF names).
`host=True` leaves the float weights as host numpy arrays (nothing placed on a device): the tensor-parallel
runner then slices each shard on the host and places it straight onto its own device.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from trellis_jax.checkpoints.errors import CheckpointError
from trellis_jax.model import quantized

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


def assemble_params(
    fetch: Fetch, config, source: str, display_name: Callable[[str], str] = str, host: bool = False
) -> dict:
    from trellis_jax.model import param_shapes  # the single statement of the layout

    shapes = param_shapes(config)
    reader = _TensorReader(fetch, source, display_name, jnp.dtype(config.dtype), np.asarray if host else jnp.asarray)
    params = {
        "embed": reader.single("model.embed_tokens.weight", shapes["embed"]),
        "final_norm": reader.single("model.norm.weight", shapes["final_norm"]),
        "layers": {key: reader.stacked(key, shape) for key, shape in shapes["layers"].items()},
    }
    if "lm_head" in shapes:
        params["lm_head"] = reader.single("lm_head.weight", shapes["lm_head"], transpose=True)
    return params


class _TensorReader:
    def __init__(self, fetch, source, display_name, dtype, place):
        self.fetch, self.source, self.display_name, self.dtype = fetch, source, display_name, dtype
        self.place = place  # jnp.asarray (onto the default device) or np.asarray (stays on the host)

    def single(self, name, shape, transpose=False):
        # kept packed: a [K, N] weight whose outputs are the tensor's rows (an embedding: its head's [H, V])
        tensor = self.checked(
            name, shape[::-1] if transpose else shape, packed_shape=shape if transpose else shape[::-1]
        )
        if quantized.is_quantized(tensor):
            return quantized.to_device(tensor)
        return self.place(np.asarray(tensor.T if transpose else tensor).astype(self.dtype, copy=False))

    def stacked(self, key, shape):
        name, transpose = LAYER_TENSORS[key]
        per_layer = shape[1:][::-1] if transpose else shape[1:]
        out, packed = None, {}
        for i in range(shape[0]):
            tensor = self.checked(f"model.layers.{i}.{name}", per_layer, packed_shape=shape[1:])
            if quantized.is_quantized(tensor):
                packed[i] = tensor
                continue
            if out is None:
                out = np.empty(shape, self.dtype)  # filled layer by layer: peak memory ~ one copy of the weights
            out[i] = tensor.T if transpose else tensor
        if out is None and len({w.fmt for w in packed.values()}) == 1:
            return quantized.stack([packed[i] for i in range(shape[0])])
        if out is None:  # formats differ between layers (Q4_K_M's attn_v, ffn_down): each kept in its own
            return quantized.mix([packed[i] for i in range(shape[0])])
        for i, tensor in packed.items():  # some layers float: dequantize (losslessly) like the rest
            out[i] = quantized.dequantize_numpy(tensor).T
        return self.place(out)

    def checked(self, name, shape, packed_shape=None):
        tensor = self.fetch(name)
        if tensor is None:
            raise CheckpointError(self.source, f"missing tensor {self.display_name(name)!r}")
        if quantized.is_quantized(tensor) and packed_shape is not None:
            shape = packed_shape  # kept packed: already [in, out]
        if tuple(tensor.shape) != tuple(shape):
            raise CheckpointError(
                self.source,
                f"tensor {self.display_name(name)!r} has shape {tuple(tensor.shape)}, expected {tuple(shape)}",
            )
        return tensor
