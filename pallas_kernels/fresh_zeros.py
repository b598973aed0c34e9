"""`fresh_zeros(shape, dtype)`: a zeroed array whose host memory is backed only where it is first written.

Contract: returns a new array of `shape` and `dtype` on the default device, every element zero, owned by
the runtime like any computation's output (so donating it updates it in place). `implementation`:
"native" (native/fresh_zeros.cc, CPU: the buffer's whole pages become a fresh anonymous mapping, which
the OS fills with zeros on first touch), "xla" (`jnp.zeros`: the reference, and the path on GPU, where a
device memset is cheap), or None to pick native where it builds.

Why: the KV pool is gigabytes on CPU; `jnp.zeros` writes all of it (a page fault and a memset per 4 KiB)
before the first step, seconds of every start, for pages most of which stay unused for a long time.
An aligned numpy buffer handed to JAX zero-copy is no substitute: JAX 0.10 copies such an external
buffer when it is first donated, so the whole cost comes back on the first step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from pallas_kernels.native.build import cpu_kernel_unavailable, load_target

TARGET = "trellis_fresh_zeros"


def native_available() -> str | None:
    """None when the native kernel can run here, else the reason."""
    return cpu_kernel_unavailable(lambda: load_target("fresh_zeros.cc", "TrellisFreshZeros", TARGET))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _native(shape: tuple[int, ...], dtype: jnp.dtype) -> jax.Array:
    # One array per program run: its result is then a buffer of its own (two results of identical
    # operand-less calls could be merged by XLA into one buffer and copied).
    return jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(shape, dtype))()


def fresh_zeros(shape, dtype, *, implementation: str | None = None) -> jax.Array:
    """A new zeroed array (see the module docstring)."""
    shape, dtype = tuple(int(n) for n in shape), jnp.dtype(dtype)
    if any(n < 0 for n in shape):
        raise ValueError(f"fresh_zeros: negative dimension in shape {shape}")
    if implementation not in (None, "native", "xla"):
        raise ValueError(f"fresh_zeros: unknown implementation {implementation!r}; use 'native', 'xla' or None")
    if implementation == "native" or (implementation is None and native_available() is None):
        load_target("fresh_zeros.cc", "TrellisFreshZeros", TARGET)
        return _native(shape, dtype)
    return jnp.zeros(shape, dtype)
