"""The native bfloat16 CPU backend of the matmul op: x @ w[layer] for weights packed as bfloat16 row pairs.

Contract: `pack_pairs(w)` turns [..., K, N] weights into [..., N/W, ceil(K/2), W, 2] bfloat16: strips of
W = `strip_width(N)` columns (48 or 16 where they divide N, else all N), each strip stored whole, rows 2i
and 2i+1 interleaved per column (an odd K gets a zero row); `unpack_pairs` inverts it. `matmul(x, wp,
layer, rows, out_dtype)`: x [M, K] (any float dtype), rounded to bfloat16, @ unpack(wp[layer]) -> [M, N],
the products of the bf16 values summed in float32 by the C++ CPU custom call in native/layer_matmul_bf16.cc
(needs AVX512_BF16); rows past `rows` are zero and not computed. `available()`: None where it runs, else why.

Why: on CPUs with AVX512_BF16 (AMD Zen 4+, Intel Cooper Lake / Sapphire Rapids+), one vdpbf16ps does
twice the multiply-adds of a float32 FMA and the packed weights are half the bytes, so a bfloat16
model's matmuls run ~2x the float32 path where XLA:CPU's bf16 dots are slower than its float32 ones
(docs/benchmarks/runner-raw-speed.md, "The strip matmul kernel"). The pair layout is what that
instruction reads; whole strips make the kernel's walk down K a sequential read (what a weight-bound
decode step needs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.native.build import cpu_kernel_unavailable, load_target

TARGET = "trellis_layer_matmul_bf16"


def is_packed(w) -> bool:
    """Whether `w` is in pack_pairs' layout ([..., S, K/2, W, 2] bfloat16)."""
    return hasattr(w, "dtype") and w.ndim >= 4 and w.shape[-1] == 2 and w.dtype == jnp.bfloat16


def strip_width(n: int) -> int:
    """The columns pack_pairs stores together: the kernel's 48-column register strip where it divides N,
    else its 16-column vectors, else (N not a multiple of 16) the whole matrix as one strip."""
    return next((width for width in (48, 16) if n % width == 0), n)


def packed_shape(shape: tuple) -> tuple:
    """The shape pack_pairs gives a [..., K, N] matrix."""
    *lead, k, n = shape
    width = strip_width(n)
    return (*lead, n // width, -(-k // 2), width, 2)


def packed_dims(wp) -> tuple[int, int]:
    """(row pairs K2, columns N) of a packed matrix."""
    return wp.shape[-3], wp.shape[-4] * wp.shape[-2]


def pack_pairs(w):
    """[..., K, N] -> [..., N/W, ceil(K/2), W, 2] bfloat16 (see the module docstring)."""
    *lead, k, n = w.shape
    if k % 2:
        w = jnp.pad(w, [(0, 0)] * len(lead) + [(0, 1), (0, 0)])
        k += 1
    width = strip_width(n)
    pairs = w.astype(jnp.bfloat16).reshape(*lead, k // 2, 2, n // width, width)  # [..., K2, 2, S, W]
    return jnp.moveaxis(pairs, (-4, -3, -2, -1), (-3, -1, -4, -2))  # [..., S, K2, W, 2]


def unpack_pairs(wp):
    """pack_pairs' inverse up to the padding row: [..., S, K2, W, 2] -> [..., 2*K2, S*W]."""
    *lead, strips, k2, width, _ = wp.shape
    pairs = jnp.moveaxis(wp, (-4, -3, -2, -1), (-2, -4, -1, -3))  # [..., K2, 2, S, W]
    return pairs.reshape(*lead, 2 * k2, strips * width)


def _load():
    return load_target("layer_matmul_bf16.cc", "TrellisLayerMatmulBf16", TARGET)


def available() -> str | None:
    """None when the native kernel can run here, else the reason."""
    return cpu_kernel_unavailable(_load, "TrellisLayerMatmulBf16IsVectorized", "this CPU (or build) has no AVX512_BF16")


def padded_bf16(x, wp):
    """x rounded to bfloat16, with a zero column where K is odd (the packed zero row)."""
    x = x.astype(jnp.bfloat16)
    missing = 2 * packed_dims(wp)[0] - x.shape[1]
    return jnp.pad(x, [(0, 0), (0, missing)]) if missing else x


def matmul(x, wp, layer, rows=None, out_dtype=None):
    """x [M, K] @ unpack(wp[layer]) (wp [L, S, K2, W, 2]) -> [M, N] in out_dtype (default x's dtype)."""
    _load()
    call = jax.ffi.ffi_call(
        TARGET, jax.ShapeDtypeStruct((x.shape[0], packed_dims(wp)[1]), jnp.float32), vmap_method="sequential"
    )
    rows = x.shape[0] if rows is None else rows
    y = call(padded_bf16(x, wp), wp, jnp.asarray(layer, jnp.int32), jnp.asarray(rows, jnp.int32))
    return y.astype(out_dtype or x.dtype)
