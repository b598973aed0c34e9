"""The native float32 CPU backend of the matmul op: x @ w[layer] for stacked layer weights, read in place.

Contract: `matmul(x, w, layer, rows)`: x [M, K] @ w[layer] -> [M, N] float32, by the C++ CPU custom call
in native/layer_matmul.cc, where w is [L, K, N] float32 or strips ([L, N/W, K, W], `pack_strips`: each
W-column strip stored whole, the layout the kernel reads sequentially). Rows past `rows` (an int32 scalar,
may be traced) are zero and not computed (a step padded to its bucket skips its padding).
`available()`: None when the kernel builds here with a vectorised path, else why. `max_rows()`: the most
rows for which it was measured to beat XLA (None: any; AVX2 builds: 64).

Why: inside a scan over layers XLA:CPU copies each layer's slice of the stacked weights before the dot,
so small-batch decode steps moved every weight byte twice; and the kernel's register-tiled strips run at
~200-220 GFLOP/s on AVX-512 where XLA's GEMM does 150-200 (docs/benchmarks/runner-raw-speed.md,
"The strip matmul kernel").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.matmul.native_bf16 import strip_width
from pallas_kernels.native.build import cpu_kernel_unavailable, load_target

TARGET = "trellis_layer_matmul"


def _library():
    return load_target("layer_matmul.cc", "TrellisLayerMatmul", TARGET)


def available() -> str | None:
    """None when the native kernel can run here, else the reason."""
    return cpu_kernel_unavailable(
        _library,
        "TrellisLayerMatmulIsVectorized",
        "built without AVX-512 or AVX2+FMA, where the portable loops are slower than XLA (BENCHMARKS.md)",
    )


def max_rows() -> int | None:
    """The most rows for which the op picks this kernel (None: no limit); needs available()."""
    limit = int(_library().TrellisLayerMatmulPreferredMaxRows())
    return limit or None


def is_strips(w) -> bool:
    """Whether `w` is float32 weights in pack_strips' layout ([L, S, K, W])."""
    return hasattr(w, "dtype") and w.ndim == 4 and w.dtype == jnp.float32


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


def matmul(x, w, layer, rows=None):
    """x [M, K] @ w[layer] (plain [L, K, N] or strips) -> [M, N] float32; see the module docstring."""
    _library()
    n = w.shape[1] * w.shape[3] if is_strips(w) else w.shape[2]
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((x.shape[0], n), jnp.float32), vmap_method="sequential")
    rows = x.shape[0] if rows is None else rows
    return call(x.astype(jnp.float32), w, jnp.asarray(layer, jnp.int32), jnp.asarray(rows, jnp.int32))
