"""`rms_norm(x, weight, eps)`: RMSNorm of the rows of x, the model's arithmetic on every backend.

Contract: x [..., H], weight [H] -> [..., H] in x's dtype: n = x * rsqrt(mean(x^2) + eps) computed in
float32 and rounded to x's dtype, then weight * n (`reference_rms_norm`, the Hugging Face order).
`implementation`: "native" (a C++ CPU custom call, native/rms_norm.cc; 2-d float32 or bfloat16 x with a
weight of the same dtype), "xla" (the reference), or None: native where it runs (CPU, it builds, and the
shapes and dtypes fit), else xla. The choice is made at trace time.

Why: inside a CPU decode step XLA runs a norm of a few rows as three ops, each split across the intra-op
pool; their wake-ups cost ~1.1-1.5 ms of a ~13 ms bf16 decode step (docs/benchmarks/runner-raw-speed.md,
"RMSNorm kernel").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.native.build import cpu_kernel_unavailable, load_target

TARGET = "trellis_rms_norm"


def reference_rms_norm(x, weight, eps: float):
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return weight * normed.astype(x.dtype)


def native_available() -> str | None:
    """None when the native kernel can run here, else the reason."""
    return cpu_kernel_unavailable(lambda: load_target("rms_norm.cc", "TrellisRmsNorm", TARGET))


def _fits_native(x, weight) -> bool:
    return (
        x.ndim == 2
        and weight.ndim == 1
        and weight.shape[0] == x.shape[1]
        and x.dtype == weight.dtype
        and x.dtype in (jnp.float32, jnp.bfloat16)
    )


def native_rms_norm(x, weight, eps: float):
    load_target("rms_norm.cc", "TrellisRmsNorm", TARGET)
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(x.shape, x.dtype), vmap_method="sequential")
    return call(x, weight, eps=np.float32(eps))


def rms_norm(x, weight, eps: float, *, implementation: str | None = None):
    """RMSNorm of x's rows times weight, in x's dtype; see the module docstring."""
    if implementation not in (None, "native", "xla"):
        raise ValueError(f"rms_norm: unknown implementation {implementation!r}; use 'native', 'xla' or None")
    if implementation == "native" and not _fits_native(x, weight):
        raise ValueError(
            f"rms_norm: the native kernel takes x [T, H] and weight [H] of one dtype (float32 or "
            f"bfloat16), got {x.dtype}{list(x.shape)} and {weight.dtype}{list(weight.shape)}"
        )
    if implementation == "native" or (
        implementation is None and _fits_native(x, weight) and native_available() is None
    ):
        return native_rms_norm(x, weight, eps)
    return reference_rms_norm(x, weight, eps)
