"""Plain-jnp oracle for ragged paged attention (the contract in docs/CONTRACTS.md, "Kernel API").

Every backend is tested against this file, so it favours obviousness over speed: for each sequence it
gathers the sequence's whole K/V through its page-table row and attends from every query row, masking
the rows that belong to other sequences. Work is O(num_seqs * T * max_kv), memory O(T * Hq * max_kv).

Semantics shared by all backends (`mask_for` is the single statement of them):
  * query row t of sequence b (cu_q_lens[b] <= t < cu_q_lens[b+1]) sits at position
    kv_lens[b] - q_len_b + (t - cu_q_lens[b]);
  * it sees key positions j with j < kv_lens[b], j <= its position and, with a sliding window w,
    position - j < w;
  * logits are q.k * sm_scale (default 1/sqrt(D)), then soft_cap * tanh(logit / soft_cap) if given;
  * padding query rows (t >= cu_q_lens[num_seqs]) and rows that see no key produce zeros;
  * arithmetic in float32, output in q.dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def row_positions(cu_q_lens, kv_lens, num_seqs, num_rows):
    """Per query row: owning sequence (or -1 for padding) and absolute position.  [T] int32 each."""
    rows = jnp.arange(num_rows, dtype=jnp.int32)
    # seq_of[t] = b with cu_q_lens[b] <= t < cu_q_lens[b+1]; side="right" skips empty sequences.
    seq_of = jnp.searchsorted(cu_q_lens, rows, side="right", method="compare_all").astype(jnp.int32) - 1
    seq_of = jnp.clip(seq_of, 0, kv_lens.shape[0] - 1)
    valid = rows < cu_q_lens[num_seqs]
    q_start = cu_q_lens[seq_of]
    q_len = cu_q_lens[seq_of + 1] - q_start
    pos = kv_lens[seq_of] - q_len + (rows - q_start)
    return jnp.where(valid, seq_of, -1), pos


def mask_for(q_pos, k_pos, kv_len, sliding_window):
    """True where a query at q_pos may see the key at k_pos of a sequence of kv_len tokens (broadcasts)."""
    visible = (k_pos < kv_len) & (k_pos <= q_pos)
    if sliding_window is not None:
        visible &= q_pos - k_pos < sliding_window
    return visible


def apply_soft_cap(logits, soft_cap):
    if soft_cap is None:
        return logits
    return soft_cap * jnp.tanh(logits / soft_cap)


def gather_sequence_kv(pages, layer, page_ids):
    """pages [L, Hkv, P, S, D], page_ids [max_pages] -> [Hkv, max_pages * S, D] (token order)."""
    _, num_kv_heads, _, page_size, head_dim = pages.shape
    seq = pages[layer][:, page_ids]  # [Hkv, max_pages, S, D]
    return seq.reshape(num_kv_heads, page_ids.shape[0] * page_size, head_dim)


def ragged_paged_attention_reference(
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
    """Oracle: see the module docstring.  q [T, Hq, D] -> out [T, Hq, D]."""
    num_rows, num_q_heads, head_dim = q.shape
    num_kv_heads = k_pages.shape[1]
    group = num_q_heads // num_kv_heads
    scale = head_dim**-0.5 if sm_scale is None else sm_scale
    seq_of, q_pos = row_positions(cu_q_lens, kv_lens, num_seqs, num_rows)
    qf = q.astype(jnp.float32).reshape(num_rows, num_kv_heads, group, head_dim)
    k_pos = jnp.arange(page_table.shape[1] * k_pages.shape[3], dtype=jnp.int32)

    def one_sequence(b):
        k = gather_sequence_kv(k_pages, layer, page_table[b]).astype(jnp.float32)  # [Hkv, N, D]
        v = gather_sequence_kv(v_pages, layer, page_table[b]).astype(jnp.float32)
        logits = apply_soft_cap(jnp.einsum("tkgd,knd->tkgn", qf, k) * scale, soft_cap)
        visible = mask_for(q_pos[:, None], k_pos[None, :], kv_lens[b], sliding_window)
        visible &= (seq_of == b)[:, None]  # [T, N]
        visible = visible[:, None, None, :]
        logits = jnp.where(visible, logits, -jnp.inf)
        peak = jnp.max(logits, axis=-1, keepdims=True)
        weights = jnp.where(visible, jnp.exp(logits - jnp.where(jnp.isfinite(peak), peak, 0.0)), 0.0)
        denom = jnp.sum(weights, axis=-1, keepdims=True)
        probs = weights / jnp.where(denom > 0, denom, 1.0)
        return jnp.einsum("tkgn,knd->tkgd", probs, v)

    def accumulate(b, out):
        return out + jnp.where(b < num_seqs, one_sequence(b), 0.0)

    out = jax.lax.fori_loop(
        0, kv_lens.shape[0], accumulate, jnp.zeros((num_rows, num_kv_heads, group, head_dim), jnp.float32)
    )
    return out.reshape(num_rows, num_q_heads, head_dim).astype(q.dtype)
