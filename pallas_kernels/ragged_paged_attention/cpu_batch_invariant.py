"""CPU backend "cpu_batch_invariant": every query row attends on its own, in one fixed order.

Same contract and semantics as `reference.py`. Each query row of the step becomes a one-token sequence of
its own (its sequence's page-table row, context length = its position + 1) and all of them go through the
native decode kernel (`pallas_kernels/native/paged_decode_attention.cc`) with context splitting off. So a
row's output is a function of its q, its position and the K/V of its context only: the kernel walks the
context page by page from the first page (the window's first page with a sliding window), one online-softmax
update per page, whether the row is a decode token, one row of a prefill chunk, or the last prompt token
recomputed after a full cache hit; whatever the step's other rows, its bucket, the row's place in it, or
how the prompt was chunked.

Why a backend of its own: `cpu_native` sends rows of multi-token sequences to the extend kernel (query
tiles as vector lanes) and one-token sequences to the decode kernel, whose arithmetic differs in the last
bits, and the decode kernel cuts long contexts into a number of splits that depends on how many sequences
decode in the step; both make a token's floats depend on the batch (`--deterministic` needs neither).
Prefill attention costs more here (each row streams its own context), which is the price of the guarantee.
"""

from __future__ import annotations

import jax.numpy as jnp

from pallas_kernels.ragged_paged_attention.cpu_native import (
    MAX_GROUP_TIMES_PAGE,
    MAX_HEAD_DIM,
    check_available,
    native_decode_attention,
)

__all__ = ["check_available", "batch_invariant_ragged_paged_attention", "unsupported_reason"]

NO_SPLIT = 2**62  # min_split_tokens no context reaches: one task per (row, kv head), no merge of splits


def unsupported_reason(num_q_heads: int, num_kv_heads: int, head_dim: int, page_size: int, kv_dtype) -> str | None:
    """None when the decode kernel takes this geometry and page dtype, else why not."""
    if jnp.dtype(kv_dtype) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
        return f"KV pages of {jnp.dtype(kv_dtype).name} (the kernel reads float32 or bfloat16 pages)"
    if (num_q_heads // num_kv_heads) * page_size > MAX_GROUP_TIMES_PAGE or head_dim > MAX_HEAD_DIM:
        return (
            f"query group {num_q_heads // num_kv_heads} x page size {page_size} > {MAX_GROUP_TIMES_PAGE} or "
            f"head_dim {head_dim} > {MAX_HEAD_DIM}"
        )
    return None


def row_sequences(kv_lens, page_table, cu_q_lens, num_seqs, num_rows: int):
    """Each query row as a one-token sequence: (context lengths [T], page tables [T, P], cu_q_lens [T + 1],
    number of real rows []). Padding rows (t >= cu_q_lens[num_seqs]) come after the real ones."""
    rows = jnp.arange(num_rows, dtype=jnp.int32)
    seq = jnp.clip(
        jnp.searchsorted(cu_q_lens, rows, side="right", method="compare_all") - 1, 0, page_table.shape[0] - 1
    )
    q_len = cu_q_lens[seq + 1] - cu_q_lens[seq]
    position = kv_lens[seq] - q_len + (rows - cu_q_lens[seq])
    return (
        (position + 1).astype(jnp.int32),
        page_table[seq],
        jnp.arange(num_rows + 1, dtype=jnp.int32),
        cu_q_lens[num_seqs],
    )


def batch_invariant_ragged_paged_attention(
    q,
    k_pages,
    v_pages,
    layer,
    kv_lens,
    page_table,
    cu_q_lens,
    num_seqs,
    *,
    sm_scale=None,
    soft_cap=None,
    sliding_window=None,
):
    """See the module docstring. q [T, Hq, D] -> [T, Hq, D] (q.dtype); a geometry the kernel does not
    take is a ValueError at trace time (no silent fallback to a path without the guarantee)."""
    num_rows, num_q_heads, head_dim = q.shape
    problem = unsupported_reason(num_q_heads, k_pages.shape[1], head_dim, k_pages.shape[3], k_pages.dtype)
    if problem:
        raise ValueError(f"ragged_paged_attention: 'cpu_batch_invariant' cannot take {problem}")
    scale = head_dim**-0.5 if sm_scale is None else sm_scale
    row_kv_lens, row_tables, row_cu, real_rows = row_sequences(kv_lens, page_table, cu_q_lens, num_seqs, num_rows)
    out = native_decode_attention(
        q.astype(jnp.float32) * scale,
        k_pages,
        v_pages,
        layer,
        row_kv_lens,
        row_tables,
        row_cu,
        real_rows,
        soft_cap=soft_cap,
        sliding_window=sliding_window,
        min_split_tokens=NO_SPLIT,
    )
    return out.astype(q.dtype)
