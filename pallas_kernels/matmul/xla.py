"""The matmul op's XLA backend, for every platform and layout: unpack the layer's matrix inside the step,
then XLA's dot.

Contract: `linear(x, w, layer=None, rows=None, out_dtype=None)` -> x [M, K] @ w[layer] (or a plain [K, N]
w when layer is None) as [M, N] in out_dtype (default x's dtype), rows past `rows` zero. Plain float
weights: `jnp.dot` with float sums in out_dtype (preferred_element_type) at the default precision, so a
bfloat16 model keeps XLA's bf16 dot (the GPU path). Quantized weights (quantized.py), float32 sums (no float
copy of the weights lives between steps): on CPU xla_quantized.py, dequantizing a cache-sized chunk of
columns at a time; elsewhere the layer's codes dequantized to float32 whole inside the step, then one dot
(on GPU the dequantize can fuse into the dot's operand). Packed
layouts (float32 strips, bfloat16 pairs) take
the reference's unpack and dot: they exist for the native kernels, and this is their fallback where
those cannot run.

Why no copy-free read: XLA:CPU copies a stacked layer's slice before its dot; the native backends exist
for that (native_f32.py). On GPU the slice is fused into the dot's operand.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.matmul import native_bf16, native_f32, quantized, xla_quantized
from pallas_kernels.matmul.reference import mask_rows, reference_linear


def linear(x, w, layer=None, rows=None, out_dtype=None):
    """x [M, K] @ w[layer] -> [M, N]; see the module docstring."""
    if quantized.is_quantized(w) and jax.default_backend() == "cpu":
        return mask_rows(xla_quantized.linear(x, w, layer), rows).astype(out_dtype or x.dtype)
    if quantized.is_quantized(w):
        rows_nk = quantized.dequantize(w) if layer is None else quantized.dequantize_layer(w, layer)  # [N, K]
        y = jax.lax.dot_general(x.astype(jnp.float32), rows_nk, (((1,), (1,)), ((), ())))
        return mask_rows(y, rows).astype(out_dtype or x.dtype)
    if native_bf16.is_packed(w):
        return reference_linear(x, w, layer, rows, out_dtype)
    if native_f32.is_strips(w):
        one = jax.lax.dynamic_index_in_dim(w, layer, axis=0, keepdims=False)
        w, layer = native_f32.unpack_strips(one), None
    if layer is not None:
        # A one-layer stack (the LM head as [1, H, V]) is read without a dynamic slice.
        w = w[0] if w.shape[0] == 1 else jax.lax.dynamic_index_in_dim(w, layer, axis=0, keepdims=False)
    return mask_rows(jnp.dot(x, w, preferred_element_type=out_dtype), rows)
