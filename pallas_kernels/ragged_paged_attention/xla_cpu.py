"""XLA implementation tuned for CPU: online softmax over page chunks, never a contiguous copy of a context.

Same contract and semantics as `reference.py`. Two strategies run in every call, on disjoint query rows:
  * decode rows (their sequence has exactly one new token): compacted into at most min(T, B) rows, then
    one loop over KV chunks of `decode_chunk_pages` pages (default: 64 tokens) shared by all rows. Scores
    and the weighted sum are multiply-reduces into which XLA fuses the page gather, so each K/V byte is
    read once and no chunk is materialised;
  * prefill/extend rows (more than one new token): tiles of up to `prefill_tile_rows` rows of one
    sequence (`schedule.build_work_items`); each tile loops over the KV chunks its rows can see (causal and
    sliding-window chunks are skipped, not masked), as [Hkv, rows*G, D] x [Hkv, chunk, D] matmuls.
Trip counts are dynamic (while loops), so padding, short contexts and empty strategies cost ~nothing.
Choices were measured on a 2-core AVX-512 VM (docs/benchmarks/paged-attention-cpu.md): for decode, batched
dots over gathered chunks cost ~30% more CPU time than the fused multiply-reduces (G = 3 makes the dots
skinny); pages are gathered as rows of a 2-d view, which runs at memcpy speed (the 5-d gather was ~2x slower).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.ragged_paged_attention.reference import apply_soft_cap, row_positions
from pallas_kernels.ragged_paged_attention.schedule import build_work_items

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


def _decode_rows(q, k_pages, v_pages, layer, page_table, seq_of, q_pos, rows, *, soft_cap, sliding_window, chunk_pages):
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


def _tile_attention(q_tile, k_pages, v_pages, layer, pages, pos, *, soft_cap, sliding_window, chunk_pages):
    """Rows of one sequence against its pages.  q_tile [Hkv, R, G, D], pages [P] (that sequence's page
    table row), pos [R] (-1: not this tile's row, sees nothing) -> [Hkv, R, G, D]."""
    page_size = k_pages.shape[3]
    chunk_tokens = chunk_pages * page_size
    first, last = _chunk_range(
        jnp.min(jnp.where(pos >= 0, pos, jnp.iinfo(jnp.int32).max)), jnp.max(pos), chunk_tokens, sliding_window
    )

    def step(c, state):
        ids = jax.lax.dynamic_slice_in_dim(pages, c * chunk_pages, chunk_pages)
        k = _gather_chunk(k_pages, layer, ids)  # [Hkv, n, D]
        v = _gather_chunk(v_pages, layer, ids)
        logits = apply_soft_cap(jnp.einsum("ktgd,knd->ktgn", q_tile, k), soft_cap)
        k_pos = c * chunk_tokens + jnp.arange(chunk_tokens, dtype=jnp.int32)
        visible = _visible(pos[None, :, None, None], k_pos[None, None, None, :], sliding_window)
        return _online_update(state, logits, visible, lambda p: jnp.einsum("ktgn,knd->ktgd", p, v))

    shape = q_tile.shape[:-1]
    state = (jnp.full(shape, _NEG_INF), jnp.zeros(shape), jnp.zeros(q_tile.shape))
    return _finish(jax.lax.fori_loop(first, last, step, state))


def _extend_tiles(
    out,
    qg,
    k_pages,
    v_pages,
    layer,
    page_table,
    kv_lens,
    cu_q_lens,
    num_seqs,
    *,
    soft_cap,
    sliding_window,
    chunk_pages,
    tile_rows,
    min_rows,
    max_rows,
):
    """Attention for every sequence with min_rows..max_rows new tokens, as tiles of up to `tile_rows`
    rows of one sequence (`schedule.build_work_items`), written into their rows of `out`.
    qg [T, Hkv, G, D] -> out [T, Hkv, G, D] (other rows as they were).

    Work follows the real rows: a sequence of n new tokens costs ceil(n / tile_rows) tiles, each over
    only the KV chunks its rows can see. (Fixed blocks of rows that looped over every sequence they
    touched multiplied the work by the number of short sequences sharing a block.)
    """
    num_rows = qg.shape[0]
    tile_rows = min(tile_rows, num_rows)
    items = build_work_items(
        cu_q_lens, kv_lens, num_seqs, num_rows=num_rows, block_rows=tile_rows, min_rows=min_rows, max_rows=max_rows
    )

    def one_tile(t, out):
        row0, count = items.row_start[t], items.rows[t]
        start = jnp.minimum(row0, num_rows - tile_rows)  # a tail tile slides back; its extra rows are masked
        offset = start + jnp.arange(tile_rows, dtype=jnp.int32) - row0
        mine = (offset >= 0) & (offset < count)
        pos = jnp.where(mine, items.pos_start[t] + offset, -1)
        q_tile = jnp.swapaxes(jax.lax.dynamic_slice_in_dim(qg, start, tile_rows), 0, 1)  # [Hkv, R, G, D]
        result = _tile_attention(
            q_tile,
            k_pages,
            v_pages,
            layer,
            page_table[items.seq[t]],
            pos,
            soft_cap=soft_cap,
            sliding_window=sliding_window,
            chunk_pages=chunk_pages,
        )
        kept = jax.lax.dynamic_slice_in_dim(out, start, tile_rows)
        update = jnp.where(mine[:, None, None, None], jnp.swapaxes(result, 0, 1), kept)
        return jax.lax.dynamic_update_slice_in_dim(out, update, start, axis=0)

    return jax.lax.fori_loop(0, jnp.sum(items.rows > 0), one_tile, out)


def _pad_page_table(page_table, multiple):
    extra = -page_table.shape[1] % multiple
    return jnp.pad(page_table, ((0, 0), (0, extra)))  # extra entries point at the sink page


def classify_rows(cu_q_lens, kv_lens, num_seqs, num_rows):
    """-> (seq_of, q_pos, is_decode), each [T]: owning sequence (-1: padding), position, and whether the
    row is its sequence's only new token (a decode row)."""
    seq_of, q_pos = row_positions(cu_q_lens, kv_lens, num_seqs, num_rows)
    q_lens = cu_q_lens[1:] - cu_q_lens[:-1]
    return seq_of, q_pos, (seq_of >= 0) & (q_lens[jnp.maximum(seq_of, 0)] == 1)


def extend_rows(
    qf,
    k_pages,
    v_pages,
    layer,
    page_table,
    kv_lens,
    cu_q_lens,
    num_seqs,
    *,
    soft_cap,
    sliding_window,
    chunk_tokens,
    tile_rows,
):
    """The tiled prefill strategy for every sequence with more than one new token.  qf [T, Hq, D]
    (float32, scaled) -> same shape; decode and padding rows are 0.

    `tile_rows` (an int or ascending sizes): a sequence of n new tokens is cut into tiles of the smallest
    size >= n (the largest if none is), so short extends do not pay for wide tiles while long prefills
    keep the wide, efficient matmuls (measured: 6 x 32 new tokens ran 2.4x faster in 32-row tiles than in
    128-row ones; a 1024-token prefill 1.6x slower).
    """
    chunk_pages = max(1, chunk_tokens // k_pages.shape[3])
    sizes = sorted({tile_rows} if isinstance(tile_rows, int) else set(tile_rows))
    qg = qf.reshape(qf.shape[0], k_pages.shape[1], -1, qf.shape[-1])
    page_table = _pad_page_table(page_table, chunk_pages)
    out = jnp.zeros(qg.shape, jnp.float32)
    for i, size in enumerate(sizes):
        out = _extend_tiles(
            out,
            qg,
            k_pages,
            v_pages,
            layer,
            page_table,
            kv_lens,
            cu_q_lens,
            num_seqs,
            chunk_pages=chunk_pages,
            tile_rows=size,
            soft_cap=soft_cap,
            sliding_window=sliding_window,
            min_rows=2 if i == 0 else sizes[i - 1] + 1,
            max_rows=None if i == len(sizes) - 1 else size,
        )
    return out.reshape(qf.shape)


def xla_ragged_paged_attention(
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
    decode_chunk_pages=None,
    prefill_chunk_tokens=256,
    prefill_tile_rows=(32, 128),
):
    """See the module docstring; knobs are static.  q [T, Hq, D] -> [T, Hq, D] (q.dtype)."""
    num_rows, num_q_heads, head_dim = q.shape
    page_size = k_pages.shape[3]
    scale = head_dim**-0.5 if sm_scale is None else sm_scale
    qf = q.astype(jnp.float32) * scale
    seq_of, q_pos, is_decode = classify_rows(cu_q_lens, kv_lens, num_seqs, num_rows)
    options = dict(soft_cap=soft_cap, sliding_window=sliding_window)

    decode_pages = decode_chunk_pages or max(1, 64 // page_size)  # 64 tokens: measured best (4-8 flat)
    num_decode = min(num_rows, page_table.shape[0])
    decode_rows = jnp.nonzero(is_decode, size=num_decode, fill_value=num_rows)[0].astype(jnp.int32)
    decoded = _decode_rows(
        qf,
        k_pages,
        v_pages,
        layer,
        _pad_page_table(page_table, decode_pages),
        seq_of,
        q_pos,
        decode_rows,
        chunk_pages=decode_pages,
        **options,
    )
    out = extend_rows(
        qf,
        k_pages,
        v_pages,
        layer,
        page_table,
        kv_lens,
        cu_q_lens,
        num_seqs,
        chunk_tokens=prefill_chunk_tokens,
        tile_rows=prefill_tile_rows,
        **options,
    )
    out = out.at[decode_rows].set(decoded.reshape(-1, num_q_heads, head_dim), mode="drop")
    return out.astype(q.dtype)
