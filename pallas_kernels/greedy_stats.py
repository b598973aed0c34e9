"""`greedy_stats(logits)`: each row's argmax and logsumexp, the two numbers a greedy step needs.

Contract: logits [S, V] float32 -> (ids [S] int32, the first index of each row's maximum; lse [S] float32,
log(sum(exp(row)))). A row of -inf gives id 0 and lse -inf. `implementation`: "native" (the C++ CPU custom
call in native/greedy_stats.cc, float32, AVX-512 builds only), "xla" (`lax.top_k(., 1)` and
`jax.nn.logsumexp`: the reference and the fallback), or None to pick native where it runs, else xla.

Why: on CPU XLA spends ~3 ms of a batch-32 greedy decode step on these two reductions over SmolLM2's
49152-token vocabulary (docs/benchmarks/runner-raw-speed.md, "Greedy sampler"); the native kernel reads
each row twice from L2 in well under a millisecond.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.native.build import cpu_kernel_unavailable, load_target

TARGET = "trellis_greedy_stats"


def native_available() -> str | None:
    """None when the native kernel can run here, else the reason."""
    return cpu_kernel_unavailable(
        lambda: load_target("greedy_stats.cc", "TrellisGreedyStats", TARGET),
        "TrellisGreedyStatsIsVectorized",
        "built without AVX-512, where the scalar loops are slower than XLA",
    )


def argmax_rows(logits):
    """[S, V] -> [S] int32, the first index of each row's maximum (as jnp.argmax, but ~2x faster on CPU)."""
    return jax.lax.top_k(logits, 1)[1][:, 0].astype(jnp.int32)


def reference_greedy_stats(logits):
    ids = argmax_rows(logits)
    lse = jax.nn.logsumexp(logits, axis=-1)
    # Rows of -inf: logsumexp gives -inf already; top_k's index is 0 as in the native kernel.
    return ids, lse.astype(jnp.float32)


def native_greedy_stats(logits):
    load_target("greedy_stats.cc", "TrellisGreedyStats", TARGET)
    rows = logits.shape[0]
    call = jax.ffi.ffi_call(
        TARGET,
        (jax.ShapeDtypeStruct((rows,), jnp.int32), jax.ShapeDtypeStruct((rows,), jnp.float32)),
        vmap_method="sequential",
    )
    return call(logits.astype(jnp.float32))


def choose(logits, implementation=None) -> str:
    """The implementation `greedy_stats` will use for these (static) shapes and dtypes."""
    if implementation is not None:
        if implementation not in ("native", "xla"):
            raise ValueError(f"greedy_stats: unknown implementation {implementation!r}; use 'native', 'xla' or None")
        return implementation
    return "native" if logits.dtype == jnp.float32 and native_available() is None else "xla"


def greedy_stats(logits, *, implementation=None):
    """logits [S, V] -> (ids [S] int32, lse [S] float32); see the module docstring."""
    if logits.ndim != 2:
        raise ValueError(f"greedy_stats: logits must be [S, V], got shape {logits.shape}")
    if choose(logits, implementation) == "native":
        return native_greedy_stats(logits)
    return reference_greedy_stats(logits)
