"""`layer_matmul(x, w, layer, rows=None, out_dtype=None)`: x @ w[layer] for stacked layer weights, without
copying the layer out.

Contract: x [M, K], w [L, K, N], layer int32[] -> [M, K] @ w[layer] of shape [M, N] in out_dtype (default
x's dtype; the native kernels sum in float32, so out_dtype=float32 costs nothing there). Float32 weights
may also come as strips (`pack_strips`: [L, N/W, K, W], each W-column strip stored whole, the layout the
native kernel reads sequentially); those always take the native kernel, or unpack + dot where it cannot run.
`rows` (an int32 scalar, may be traced): only the first `rows` rows matter; the rest of the result is
zero and the native kernel does not compute them (a step padded to its bucket skips its padding).
`implementation`: "native" (the C++ CPU custom call in native/layer_matmul.cc; float32 only), "xla"
(`x @ w[layer]`, the reference and the fallback), or None to pick: native on CPU for float32 when it
builds here with a vectorised path and M is within the rows that build was measured to win
(`native_max_rows()`: any M with AVX-512, up to 64 with AVX2), else xla. The choice is made at trace
time from static shapes.

Why: inside a scan over layers XLA:CPU copies each layer's slice of the stacked weights before the dot,
so small-batch decode steps moved every weight byte twice; and the kernel's register-tiled strips run at
~200-220 GFLOP/s on AVX-512 where XLA's GEMM does 150-200 (docs/benchmarks/runner-raw-speed.md,
"The strip matmul kernel").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.layer_matmul_bf16 import is_packed, packed_matmul, strip_width
from pallas_kernels.native.build import cpu_kernel_unavailable, load_target

TARGET = "trellis_layer_matmul"


def _library():
    return load_target("layer_matmul.cc", "TrellisLayerMatmul", TARGET)


def native_available() -> str | None:
    """None when the native kernel can run here, else the reason."""
    return cpu_kernel_unavailable(
        _library,
        "TrellisLayerMatmulIsVectorized",
        "built without AVX-512 or AVX2+FMA, where the portable loops are slower than XLA (BENCHMARKS.md)",
    )


def native_max_rows() -> int | None:
    """The most rows for which `choose` picks the native kernel (None: no limit); needs native_available()."""
    limit = int(_library().TrellisLayerMatmulPreferredMaxRows())
    return limit or None


def is_strips(w) -> bool:
    """Whether `w` is float32 weights in pack_strips' layout ([L, S, K, W])."""
    return w.ndim == 4 and w.dtype == jnp.float32


def is_packed_layout(w) -> bool:
    """Whether `w` is in a layout only `layer_matmul` reads: bf16 row pairs or float32 strips."""
    return is_packed(w) or is_strips(w)


def strips_shape(shape: tuple) -> tuple:
    """The shape pack_strips gives a [..., K, N] matrix."""
    *lead, k, n = shape
    width = strip_width(n)
    return (*lead, n // width, k, width)


def pack_strips(w):
    """[..., K, N] float32 -> [..., N/W, K, W]: strips of W = strip_width(N) columns, each stored whole."""
    *lead, k, n = w.shape
    width = strip_width(n)
    return jnp.swapaxes(w.reshape(*lead, k, n // width, width), -3, -2)


def unpack_strips(ws):
    """pack_strips' inverse: [..., S, K, W] -> [..., K, S*W]."""
    *lead, strips, k, width = ws.shape
    return jnp.swapaxes(ws, -3, -2).reshape(*lead, k, strips * width)


def reference_layer_matmul(x, w, layer, rows=None, out_dtype=None):
    w = jax.lax.dynamic_index_in_dim(w, layer, axis=0, keepdims=False)
    y = jnp.dot(x, unpack_strips(w) if w.ndim == 3 else w, preferred_element_type=out_dtype)
    if rows is None:
        return y
    return jnp.where(jnp.arange(x.shape[0])[:, None] < rows, y, jnp.zeros((), y.dtype))


def native_layer_matmul(x, w, layer, rows=None):
    _library()
    n = w.shape[1] * w.shape[3] if is_strips(w) else w.shape[2]
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((x.shape[0], n), jnp.float32), vmap_method="sequential")
    rows = x.shape[0] if rows is None else rows
    return call(x.astype(jnp.float32), w, jnp.asarray(layer, jnp.int32), jnp.asarray(rows, jnp.int32))


def choose(x, w, implementation=None) -> str:
    """The implementation `layer_matmul` will use for these (static) shapes and dtypes (float32 weights).
    Float32 strips take the native kernel whenever it runs (XLA would have to unpack them first)."""
    if implementation is not None:
        if implementation not in ("native", "xla"):
            raise ValueError(f"layer_matmul: unknown implementation {implementation!r}; use 'native', 'xla' or None")
        return implementation
    if x.dtype != jnp.float32 or w.dtype != jnp.float32 or native_available() is not None:
        return "xla"
    limit = native_max_rows()
    return "native" if is_strips(w) or limit is None or x.shape[0] <= limit else "xla"


def layer_matmul(x, w, layer, rows=None, *, implementation=None, out_dtype=None):
    """x [M, K] @ w[layer] (w [L, K, N]) -> [M, N] in out_dtype (default x's dtype), rows past `rows` zero;
    see the module docstring.

    Weights packed by `layer_matmul_bf16.pack_pairs` ([L, N/W, ceil(K/2), W, 2] bfloat16) take the bf16 path;
    float32 strips (`pack_strips`) the native kernel, or its reference where the kernel cannot run.
    """
    if is_packed(w):
        return packed_matmul(x, w, layer, rows, implementation=implementation, out_dtype=out_dtype)
    if is_strips(w):
        if x.ndim != 2 or x.shape[1] != w.shape[2]:
            raise ValueError(
                f"layer_matmul: x must be [M, K] and float32 strips [L, S, K, W], got {x.shape} and {w.shape}"
            )
    elif x.ndim != 2 or w.ndim != 3 or x.shape[1] != w.shape[1]:
        raise ValueError(f"layer_matmul: x must be [M, K] and w [L, K, N], got {x.shape} and {w.shape}")
    if choose(x, w, implementation) == "native":
        return native_layer_matmul(x, w, layer, rows).astype(out_dtype or x.dtype)
    return reference_layer_matmul(x, w, layer, rows, out_dtype)
