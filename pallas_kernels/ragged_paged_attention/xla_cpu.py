"""XLA implementation tuned for CPU: online softmax over page chunks, never a contiguous copy of a context.

Same contract and semantics as `reference.py`. Two strategies run in every call, on disjoint query rows:
  * decode rows (their sequence has exactly one new token): compacted into at most min(T, B) rows, then
    one loop over KV chunks of `decode_chunk_pages` pages (default: 64 tokens) shared by all rows. Scores
    and the weighted sum are multiply-reduces into which XLA fuses the page gather, so each K/V byte is
    read once and no chunk is materialised;
  * prefill/extend rows (more than one new token): query blocks of `prefill_block_rows` rows; each block
    loops over the sequences it holds and, per sequence, over the KV chunks its rows can see (causal and
    sliding-window chunks are skipped, not masked), as [Hkv, rows*G, D] x [Hkv, chunk, D] matmuls.
Trip counts are dynamic (while loops), so padding, short contexts and empty strategies cost ~nothing.
Choices were measured on a 2-core AVX-512 VM (BENCHMARKS.md): for decode, batched dots over gathered
chunks cost ~30% more CPU time than the fused multiply-reduces (G = 3 makes the dots skinny); pages are
gathered as rows of a 2-d view, which runs at memcpy speed (the 5-d gather was ~2x slower).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.ragged_paged_attention.reference import apply_soft_cap, row_positions

_NEG_INF = -jnp.inf


def _online_update(state, logits, visible, weighted_values):
    """One flash-attention step. logits [..., n] masked by `visible`; state (m, l, acc) in float32;
    weighted_values(probs [..., n]) -> [..., D] is probs @ V for this chunk."""
    m, l, acc = state
    logits = jnp.where(visible, logits, _NEG_INF)
    m_new = jnp.maximum(m, jnp.max(logits, axis=-1))
    m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)  # rows that saw nothing yet stay at 0/0
    alpha = jnp.exp(m - m_safe)
    probs = jnp.exp(logits - m_safe[..., None])
    l_new = l * alpha + jnp.sum(probs, axis=-1)
    acc_new = acc * alpha[..., None] + weighted_values(probs)
    return m_new, l_new, acc_new


def _finish(state):
    _, l, acc = state
    return acc / jnp.where(l > 0, l, 1.0)[..., None]


def _gather_chunk(pages, layer, page_ids):
    """pages [L, Hkv, P, S, D], page_ids [..., C] -> [Hkv, ..., C*S, D] in float32.

    Gathers whole rows of a [L*Hkv*P, S*D] view: XLA CPU copies such rows at memcpy speed, while the
    same gather on the 5-d array ran ~2x slower (measured).
    """
    num_layers, num_kv_heads, num_pages, page_size, head_dim = pages.shape
    rows = pages.reshape(num_layers * num_kv_heads * num_pages, page_size * head_dim)
    heads = jnp.arange(num_kv_heads, dtype=jnp.int32).reshape((num_kv_heads,) + (1,) * page_ids.ndim)
    index = (layer * num_kv_heads + heads) * num_pages + page_ids[None]
    chunk = rows.at[index].get(mode="promise_in_bounds")  # [Hkv, ..., C, S*D]
    shape = chunk.shape
    return chunk.reshape(*shape[:-2], shape[-2] * page_size, head_dim).astype(jnp.float32)


def _chunk_range(pos_lo, pos_hi, chunk_tokens, sliding_window):
    """Chunks [first, last) that rows with positions pos_lo..pos_hi can see (empty when pos_hi < 0)."""
    first = 0 if sliding_window is None else jnp.maximum(pos_lo - sliding_window + 1, 0) // chunk_tokens
    last = jnp.where(pos_hi >= 0, pos_hi // chunk_tokens + 1, 0)
    return jnp.asarray(first, jnp.int32), jnp.maximum(last, first).astype(jnp.int32)


def _visible(q_pos, k_pos, sliding_window):
    visible = k_pos <= q_pos
    if sliding_window is not None:
        visible &= q_pos - k_pos < sliding_window
    return visible


def _decode_rows(q, k_pages, v_pages, layer, page_table, seq_of, q_pos, rows, *, soft_cap,
                 sliding_window, chunk_pages):
    """Attention for the (compacted) decode rows `rows` [R] (value T = absent).  -> [R, Hkv, G, D]."""
    num_rows = q.shape[0]
    num_kv_heads, page_size = k_pages.shape[1], k_pages.shape[3]
    present = rows < num_rows
    safe_rows = jnp.where(present, rows, 0)
    pos = jnp.where(present, q_pos[safe_rows], -1)  # [R]; -1 sees nothing
    # Absent rows read only the sink page (cache-resident) instead of some sequence's context.
    row_pages = jnp.where(present[:, None], page_table[jnp.maximum(seq_of[safe_rows], 0)], 0)
    qg = q[safe_rows].reshape(rows.shape[0], num_kv_heads, -1, q.shape[-1])
    qg = jnp.swapaxes(qg, 0, 1)  # [Hkv, R, G, D]
    chunk_tokens = chunk_pages * page_size
    valid_pos = jnp.where(present, pos, jnp.iinfo(jnp.int32).max)
    first, last = _chunk_range(jnp.min(valid_pos), jnp.max(pos), chunk_tokens, sliding_window)

    def step(c, state):
        ids = jax.lax.dynamic_slice_in_dim(row_pages, c * chunk_pages, chunk_pages, axis=1)
        k = _gather_chunk(k_pages, layer, ids)  # [Hkv, R, n, D]
        v = _gather_chunk(v_pages, layer, ids)
        # Multiply-reduce instead of dots: XLA CPU fuses the page gather into the reduction, so the
        # chunk is never materialised (~30% less CPU time than batched dots with G = 3, measured).
        logits = jnp.sum(k[:, :, None] * qg[:, :, :, None], axis=-1)  # [Hkv, R, G, n]; scale is in q
        logits = apply_soft_cap(logits, soft_cap)
        k_pos = c * chunk_tokens + jnp.arange(chunk_tokens, dtype=jnp.int32)
        visible = _visible(pos[None, :, None, None], k_pos[None, None, None, :], sliding_window)
        return _online_update(state, logits, visible, lambda p: jnp.sum(p[..., None] * v[:, :, None], axis=3))

    shape = qg.shape[:-1]
    state = (jnp.full(shape, _NEG_INF), jnp.zeros(shape), jnp.zeros(qg.shape))
    state = jax.lax.fori_loop(first, last, step, state)
    return jnp.swapaxes(_finish(state), 0, 1)


def _prefill_block(q_block, k_pages, v_pages, layer, page_table, blk_seq, blk_pos, *, soft_cap,
                   sliding_window, chunk_pages, num_seqs_max):
    """One block of rows (blk_seq = -1 where not handled here).  q_block [Hkv, Tq, G, D] -> same."""
    page_size = k_pages.shape[3]
    chunk_tokens = chunk_pages * page_size
    b_lo = jnp.min(jnp.where(blk_seq >= 0, blk_seq, num_seqs_max))
    b_hi = jnp.max(blk_seq)

    def one_sequence(b, state):
        mine = blk_seq == b
        pos = jnp.where(mine, blk_pos, -1)
        first, last = _chunk_range(jnp.min(jnp.where(mine, blk_pos, jnp.iinfo(jnp.int32).max)),
                                   jnp.max(pos), chunk_tokens, sliding_window)

        def step(c, state):
            ids = jax.lax.dynamic_slice_in_dim(page_table[b], c * chunk_pages, chunk_pages)
            k = _gather_chunk(k_pages, layer, ids)  # [Hkv, n, D]
            v = _gather_chunk(v_pages, layer, ids)
            logits = apply_soft_cap(jnp.einsum("ktgd,knd->ktgn", q_block, k), soft_cap)
            k_pos = c * chunk_tokens + jnp.arange(chunk_tokens, dtype=jnp.int32)
            visible = _visible(pos[None, :, None, None], k_pos[None, None, None, :], sliding_window)
            return _online_update(state, logits, visible, lambda p: jnp.einsum("ktgn,knd->ktgd", p, v))

        return jax.lax.fori_loop(first, last, step, state)

    shape = q_block.shape[:-1]
    state = (jnp.full(shape, _NEG_INF), jnp.zeros(shape), jnp.zeros(q_block.shape))
    return _finish(jax.lax.fori_loop(b_lo, b_hi + 1, one_sequence, state))


def _prefill_rows(q, k_pages, v_pages, layer, page_table, seq_of, q_pos, *, soft_cap, sliding_window,
                  chunk_pages, block_rows):
    """Attention for rows with seq_of >= 0, block by block.  -> [T, Hkv, G, D] (other rows: 0)."""
    num_rows, _, head_dim = q.shape
    num_kv_heads = k_pages.shape[1]
    block_rows = min(block_rows, num_rows)
    num_blocks = -(-num_rows // block_rows)
    pad = num_blocks * block_rows - num_rows
    qg = jnp.pad(q, ((0, pad), (0, 0), (0, 0))).reshape(num_blocks * block_rows, num_kv_heads, -1, head_dim)
    qg = jnp.moveaxis(qg.reshape(num_blocks, block_rows, *qg.shape[1:]), 2, 1)  # [nb, Hkv, Tq, G, D]
    seq_of = jnp.pad(seq_of, (0, pad), constant_values=-1).reshape(num_blocks, block_rows)
    q_pos = jnp.pad(q_pos, (0, pad), constant_values=-1).reshape(num_blocks, block_rows)

    def one_block(i, out):
        block = _prefill_block(qg[i], k_pages, v_pages, layer, page_table, seq_of[i], q_pos[i],
                               soft_cap=soft_cap, sliding_window=sliding_window,
                               chunk_pages=chunk_pages, num_seqs_max=page_table.shape[0])
        return out.at[i].set(jnp.moveaxis(block, 0, 1))

    out = jnp.zeros((num_blocks, block_rows, num_kv_heads, qg.shape[3], head_dim), jnp.float32)
    out = jax.lax.fori_loop(0, num_blocks, one_block, out)
    return out.reshape(num_blocks * block_rows, num_kv_heads, -1, head_dim)[:num_rows]


def _pad_page_table(page_table, multiple):
    extra = -page_table.shape[1] % multiple
    return jnp.pad(page_table, ((0, 0), (0, extra)))  # extra entries point at the sink page


def classify_rows(cu_q_lens, kv_lens, num_seqs, num_rows):
    """-> (seq_of, q_pos, is_decode), each [T]: owning sequence (-1: padding), position, and whether the
    row is its sequence's only new token (a decode row)."""
    seq_of, q_pos = row_positions(cu_q_lens, kv_lens, num_seqs, num_rows)
    q_lens = cu_q_lens[1:] - cu_q_lens[:-1]
    return seq_of, q_pos, (seq_of >= 0) & (q_lens[jnp.maximum(seq_of, 0)] == 1)


def extend_rows(qf, k_pages, v_pages, layer, page_table, seq_of, q_pos, is_decode, *, soft_cap, sliding_window,
                chunk_tokens, block_rows):
    """The blocked prefill strategy for every row that is not a decode row.  qf [T, Hq, D] (float32,
    scaled) -> same shape; decode and padding rows are 0."""
    chunk_pages = max(1, chunk_tokens // k_pages.shape[3])
    out = _prefill_rows(qf, k_pages, v_pages, layer, _pad_page_table(page_table, chunk_pages),
                        jnp.where(is_decode, -1, seq_of), q_pos, chunk_pages=chunk_pages, block_rows=block_rows,
                        soft_cap=soft_cap, sliding_window=sliding_window)
    return out.reshape(qf.shape)


def xla_ragged_paged_attention(q, k_pages, v_pages, layer, kv_lens, page_table, cu_q_lens, num_seqs, *,
                               sm_scale=None, soft_cap=None, sliding_window=None,
                               decode_chunk_pages=None, prefill_chunk_tokens=256, prefill_block_rows=128):
    """See the module docstring; knobs are static.  q [T, Hq, D] -> [T, Hq, D] (q.dtype)."""
    num_rows, num_q_heads, head_dim = q.shape
    page_size = k_pages.shape[3]
    scale = head_dim ** -0.5 if sm_scale is None else sm_scale
    qf = q.astype(jnp.float32) * scale
    seq_of, q_pos, is_decode = classify_rows(cu_q_lens, kv_lens, num_seqs, num_rows)
    options = dict(soft_cap=soft_cap, sliding_window=sliding_window)

    decode_pages = decode_chunk_pages or max(1, 64 // page_size)  # 64 tokens: measured best (4-8 flat)
    num_decode = min(num_rows, page_table.shape[0])
    decode_rows = jnp.nonzero(is_decode, size=num_decode, fill_value=num_rows)[0].astype(jnp.int32)
    decoded = _decode_rows(qf, k_pages, v_pages, layer, _pad_page_table(page_table, decode_pages), seq_of,
                           q_pos, decode_rows, chunk_pages=decode_pages, **options)
    out = extend_rows(qf, k_pages, v_pages, layer, page_table, seq_of, q_pos, is_decode,
                      chunk_tokens=prefill_chunk_tokens, block_rows=prefill_block_rows, **options)
    out = out.at[decode_rows].set(decoded.reshape(-1, num_q_heads, head_dim), mode="drop")
    return out.astype(q.dtype)
