"""Work list for the Pallas kernels: the ragged query rows cut into (sequence, row block) items.

Computed with jnp inside the jitted step (no host round trip). Each item is one block of up to
`block_rows` consecutive query rows of one sequence; the kernel grid runs over a static upper bound of
items (`max_items`), and items past the real count have `rows == 0` (kernels skip them).

Fields (all int32 [max_items]):
  seq        sequence b of the item (0 for empty items)
  row_start  first query row (index into the flattened T rows)
  rows       number of valid rows in this item (0 = empty)
  pos_start  absolute position of the first row (the prefix offset: kv_len - q_len + block offset)
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp


class WorkItems(NamedTuple):
    seq: jnp.ndarray
    row_start: jnp.ndarray
    rows: jnp.ndarray
    pos_start: jnp.ndarray


def max_items(num_rows, num_seqs_max, block_rows):
    """Static bound: every sequence adds at most one partial block."""
    return -(-num_rows // block_rows) + num_seqs_max


def _blocks_per_sequence(cu_q_lens, num_seqs, block_rows, min_rows=1, max_rows=None):
    """-> (row blocks of each sequence [B] (0 for padding sequences and those with fewer than `min_rows`
    or more than `max_rows` new rows), index of its first item [B])."""
    q_lens = cu_q_lens[1:] - cu_q_lens[:-1]
    active = (jnp.arange(q_lens.shape[0]) < num_seqs) & (q_lens >= min_rows)
    if max_rows is not None:
        active &= q_lens <= max_rows
    blocks = jnp.where(active, -(-q_lens // block_rows), 0)
    return blocks, jnp.cumsum(blocks) - blocks


def build_work_items(cu_q_lens, kv_lens, num_seqs, *, num_rows, block_rows, min_rows=1, max_rows=None):
    """Items of the sequences with min_rows..max_rows new rows, in sequence order; real items first."""
    num_seqs_max = kv_lens.shape[0]
    q_lens = cu_q_lens[1:] - cu_q_lens[:-1]
    blocks, first_item = _blocks_per_sequence(cu_q_lens, num_seqs, block_rows, min_rows, max_rows)
    n = max_items(num_rows, num_seqs_max, block_rows)
    item = jnp.arange(n, dtype=jnp.int32)
    # compare_all: one fused comparison instead of a loop of tiny kernels (B and items are small)
    seq = jnp.searchsorted(first_item + blocks, item, side="right", method="compare_all").astype(jnp.int32)
    seq = jnp.minimum(seq, num_seqs_max - 1)
    offset = (item - first_item[seq]) * block_rows
    rows = jnp.where(item < jnp.sum(blocks), jnp.clip(q_lens[seq] - offset, 0, block_rows), 0)
    return WorkItems(
        seq=jnp.where(rows > 0, seq, 0).astype(jnp.int32),
        row_start=jnp.where(rows > 0, cu_q_lens[seq] + offset, 0).astype(jnp.int32),
        rows=rows.astype(jnp.int32),
        pos_start=jnp.where(rows > 0, kv_lens[seq] - q_lens[seq] + offset, 0).astype(jnp.int32),
    )


def row_items(cu_q_lens, num_seqs, *, num_rows, block_rows):
    """Inverse map: for each query row, (its work item, its row within the item), int32 [T] each.

    Padding rows (t >= cu_q_lens[num_seqs]) map to some valid item; callers mask them.
    """
    blocks, first_item = _blocks_per_sequence(cu_q_lens, num_seqs, block_rows)
    rows = jnp.arange(num_rows, dtype=jnp.int32)
    seq = jnp.searchsorted(cu_q_lens, rows, side="right", method="compare_all") - 1
    seq = jnp.clip(seq, 0, blocks.shape[0] - 1)
    local = jnp.maximum(rows - cu_q_lens[seq], 0)
    last_item = max_items(num_rows, blocks.shape[0], block_rows) - 1
    item = jnp.minimum(first_item[seq] + local // block_rows, last_item)
    return item.astype(jnp.int32), (local % block_rows).astype(jnp.int32)
