"""Whether this machine can run a model batch-invariantly, and with which attention backend.

Contract: `batch_invariance_problem(config, dtype, kv_dtype, page_size) -> str | None`: None when every
reduction of a step can run in an order fixed per token row (native matmul kernels for the model's dtype,
the "cpu_batch_invariant" attention over these pages), else the reason it cannot. The Runner refuses
`batch_invariant=True` with that reason; the engine builder falls back to one compiled bucket.
`INVARIANT_ATTENTION` is the attention backend a batch-invariant runner uses.

What "batch-invariant" means: a token row's floats depend on its own inputs (its token, its position, the
K/V of its context) only, not on the other rows of the step, their number (the bucket), the row's place
among them, how its prompt was chunked, or whether its context's K/V came from the radix cache. The
elementwise parts of the step (embedding, RoPE, norms, residuals, the activation) are per row already;
the reductions over K (matmuls) and over the context (attention) are what this module vouches for.
"""

from __future__ import annotations

import jax

INVARIANT_ATTENTION = "cpu_batch_invariant"


def batch_invariance_problem(config, dtype, kv_dtype, page_size: int) -> str | None:
    """None when a Runner for this model can be batch-invariant here, else why not (see the module docstring)."""
    from pallas_kernels.matmul import native_problem
    from pallas_kernels.ragged_paged_attention import cpu_batch_invariant

    if jax.devices()[0].platform != "cpu":
        return f"no batch-invariant kernels for {jax.devices()[0].platform} yet (CPU only)"
    matmul = native_problem(dtype)
    if matmul:
        return f"the native matmul cannot run: {matmul}"
    attention = cpu_batch_invariant.check_available("cpu") or cpu_batch_invariant.unsupported_reason(
        config.num_heads, config.num_kv_heads, config.head_dim, page_size, kv_dtype
    )
    return f"the batch-invariant attention cannot run: {attention}" if attention else None
