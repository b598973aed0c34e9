"""The matmul op's oracle, in plain jnp: unpack (dequantize) the layer's matrix to float32, then one dot.

Contract: `dense(w, layer=None)`: the [K, N] float32 matrix that `w[layer]` (stacked, any layout the op's
api prepares) or `w` (one plain [K, N] matrix, layer None) stands for; bfloat16 pairs come back with their
zero padding row where K is odd. `reference_linear(x, w, layer=None, rows=None, out_dtype=None)`:
x [M, K] @ dense(w, layer) at HIGHEST precision in float32 -> [M, N] in out_dtype (default x's dtype), rows
past `rows` zero. For bfloat16 pairs x is rounded to bfloat16 first (what the native kernel multiplies).
Every backend is tested against this.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.matmul import native_bf16, native_f32, quantized


def mask_rows(y, rows):
    """y with the rows at and past `rows` zeroed (rows None: y)."""
    if rows is None:
        return y
    return jnp.where(jnp.arange(y.shape[0])[:, None] < rows, y, jnp.zeros((), y.dtype))


def dense(w, layer=None):
    """The float32 [K, N] matrix behind w[layer] (or a plain w when layer is None); see the module docstring."""
    if quantized.is_quantized(w):
        return (quantized.dequantize(w) if layer is None else quantized.dequantize_layer(w, layer)).T
    if layer is None:
        return w.astype(jnp.float32)
    one = jax.lax.dynamic_index_in_dim(w, layer, axis=0, keepdims=False)
    if native_bf16.is_packed(w):
        return native_bf16.unpack_pairs(one).astype(jnp.float32)
    if native_f32.is_strips(w):
        return native_f32.unpack_strips(one)
    return one.astype(jnp.float32)


def reference_linear(x, w, layer=None, rows=None, out_dtype=None):
    """x [M, K] @ dense(w, layer) -> [M, N]; see the module docstring."""
    xf = native_bf16.padded_bf16(x, w) if native_bf16.is_packed(w) else x
    y = jnp.dot(xf.astype(jnp.float32), dense(w, layer), precision=jax.lax.Precision.HIGHEST)
    return mask_rows(y, rows).astype(out_dtype or x.dtype)
