"""The native CPU backend of the matmul op for GGUF Q8_0/Q4_0/Q4_1 weights kept packed (quantized.py) and
the K-quants Q4_K/Q5_K/Q6_K in their own super-block factors (kquants.py; the kernel forms d*sc and dmin*m).

Contract: `matmul(x, w, layer, rows=None)`: x [M, K] @ dequantize(w[layer]) -> [M, N] float32 with float32
sums, by the C++ custom call in native/layer_matmul_q.cc, reading the packed codes in place (the layer
index is a pointer offset) and widening each 32-group to float32 in registers; rows past `rows` are zero
and not computed. `available()`: None when the kernel builds here with its AVX2 + FMA + F16C path, else why.
`MAX_ROWS`: the most rows the op hands it (the kernel widens each column's codes once per 8 rows, so past
a few tiles XLA's dequantize-then-GEMM is cheaper; docs/benchmarks/quantized.md).

Why: decode at small batch is bound by the bytes of weights read, and Q4_1 is 20 bytes per 32 weights
against float32's 128.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.matmul import quantized
from pallas_kernels.native.build import cpu_kernel_unavailable, load_target

TARGET = "trellis_layer_matmul_q"
FORMAT_IDS = {"Q8_0": 0, "Q4_0": 1, "Q4_1": 2, "Q4_K": 3, "Q5_K": 4, "Q6_K": 5}
MAX_ROWS = 64


def _load():
    return load_target("layer_matmul_q.cc", "TrellisLayerMatmulQ", TARGET)


def available() -> str | None:
    """None when the native kernel can run here, else the reason."""
    return cpu_kernel_unavailable(_load, "TrellisLayerMatmulQIsVectorized", "this CPU (or build) lacks AVX2+FMA+F16C")


def matmul(x, w, layer, rows=None):
    """x [M, K] @ dequantize(w[layer]) -> [M, N] float32; see the module docstring. A LayerMix runs the
    kernel on the part holding the layer, in that part's format."""
    if quantized.is_layer_mix(w):
        return quantized.select(w, layer, lambda part, index: matmul(x, part, index, rows))
    _load()
    n = w.shape[-1]
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((x.shape[0], n), jnp.float32), vmap_method="sequential")
    rows = x.shape[0] if rows is None else rows
    mins = w.scales if w.mins is None else w.mins  # unread by Q8_0 / Q4_0
    return call(
        x.astype(jnp.float32),
        w.codes,
        w.scales,
        mins,
        jnp.asarray(layer, jnp.int32),
        jnp.asarray(rows, jnp.int32),
        fmt=np.int32(FORMAT_IDS[w.fmt]),
    )
