"""StepInputs: the ragged batch one forward call consumes, and a simple builder for it.

Contract (docs/CONTRACTS.md, "Model"): all int32 arrays (`check_step_inputs`); T token rows, S sequence rows, P pages per row.
  token_ids [T], positions [T], slot_mapping [T], page_table [S, P], kv_lens [S], cu_q_lens [S+1],
  num_seqs [], logits_indices [S]
Sequence b's new tokens are rows cu_q_lens[b]:cu_q_lens[b+1]; they sit at positions
kv_lens[b] - q_len_b ... kv_lens[b] - 1 (the prefix before them is already cached). Padding rows write
to page 0 and padding sequences have kv_lens 0. The engine has its own packer with buckets; the builder
here serves tests and the generate CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from trellis_jax.model.checks import as_value_error


class StepInputs(NamedTuple):
    token_ids: jax.Array  # [T]
    positions: jax.Array  # [T]
    slot_mapping: jax.Array  # [T] page_id * page_size + offset
    page_table: jax.Array  # [S, P]
    kv_lens: jax.Array  # [S] tokens of sequence b after this step
    cu_q_lens: jax.Array  # [S+1]
    num_seqs: jax.Array  # [] sequences b >= num_seqs are padding
    logits_indices: jax.Array  # [S] token row whose logits are returned for sequence b


def check_step_inputs(batch: StepInputs) -> None:
    """ValueError unless every field is int32 and the shapes agree: [T] token rows, [S] sequence rows."""
    shapes = {name: tuple(value.shape) for name, value in batch._asdict().items()}
    with as_value_error(
        f"step inputs must be int32, token_ids/positions/slot_mapping [T], page_table [S, P], "
        f"kv_lens/logits_indices [S], cu_q_lens [S+1], num_seqs []; got {shapes}"
    ):
        chex.assert_rank([batch.token_ids, batch.kv_lens, batch.page_table], [1, 1, 2])
        rows, seqs = batch.token_ids.shape[0], batch.kv_lens.shape[0]
        chex.assert_shape([batch.positions, batch.slot_mapping], (rows,))
        chex.assert_shape([batch.page_table, batch.cu_q_lens], [(seqs, None), (seqs + 1,)])
        chex.assert_shape([batch.num_seqs, batch.logits_indices], [(), (seqs,)])
        chex.assert_type(list(batch), jnp.int32)


def sequential_page_tables(max_lens: Sequence[int], page_size: int) -> list[list[int]]:
    """Disjoint page lists, from page 1 upwards, with room for max_lens[b] tokens each (page 0 is the sink)."""
    tables, next_page = [], 1
    for length in max_lens:
        count = -(-length // page_size)
        tables.append(list(range(next_page, next_page + count)))
        next_page += count
    return tables


def build_step_inputs(
    new_tokens: Sequence[Sequence[int]],
    cached_lens: Sequence[int],
    page_tables: Sequence[Sequence[int]],
    page_size: int,
    *,
    num_token_rows: int | None = None,
    num_seq_rows: int | None = None,
    pages_per_seq: int | None = None,
) -> StepInputs:
    """Pack sequence b's `new_tokens[b]` after its `cached_lens[b]` cached tokens, pages `page_tables[b]`.

    The optional sizes pad T, S and P (fixed shapes avoid recompiles); logits are taken at each
    sequence's last new token.
    """
    if not (len(new_tokens) == len(cached_lens) == len(page_tables)) or not new_tokens:
        raise ValueError(
            f"need one entry per sequence in new_tokens ({len(new_tokens)}), cached_lens "
            f"({len(cached_lens)}) and page_tables ({len(page_tables)}), at least one"
        )
    q_lens = [len(t) for t in new_tokens]
    if min(q_lens) < 1:
        raise ValueError(f"every sequence needs at least one new token, got lengths {q_lens}")
    total = sum(q_lens)
    num_token_rows = num_token_rows or total
    num_seq_rows = num_seq_rows or len(new_tokens)
    pages_per_seq = pages_per_seq or max(len(p) for p in page_tables)
    if total > num_token_rows or len(new_tokens) > num_seq_rows or max(len(p) for p in page_tables) > pages_per_seq:
        raise ValueError(
            f"batch ({total} tokens, {len(new_tokens)} sequences) does not fit "
            f"{num_token_rows} token rows, {num_seq_rows} sequence rows, {pages_per_seq} pages"
        )

    token_ids = np.zeros(num_token_rows, np.int32)
    positions = np.zeros(num_token_rows, np.int32)
    slots = np.zeros(num_token_rows, np.int32)  # padding rows write to the sink page 0
    page_table = np.zeros((num_seq_rows, pages_per_seq), np.int32)
    kv_lens = np.zeros(num_seq_rows, np.int32)
    cu_q_lens = np.full(num_seq_rows + 1, total, np.int32)
    logits_indices = np.zeros(num_seq_rows, np.int32)
    start = 0
    for b, (tokens, cached, pages) in enumerate(zip(new_tokens, cached_lens, page_tables)):
        end = start + len(tokens)
        seq_positions = np.arange(cached, cached + len(tokens), dtype=np.int32)
        if cached + len(tokens) > len(pages) * page_size:
            raise ValueError(
                f"sequence {b}: {cached + len(tokens)} tokens need more than its {len(pages)} pages of {page_size}"
            )
        token_ids[start:end] = tokens
        positions[start:end] = seq_positions
        slots[start:end] = (
            np.asarray(pages, np.int32)[seq_positions // page_size] * page_size + seq_positions % page_size
        )
        page_table[b, : len(pages)] = pages
        kv_lens[b] = cached + len(tokens)
        cu_q_lens[b] = start
        logits_indices[b] = end - 1
        start = end
    return StepInputs(
        *(
            jnp.asarray(a)
            for a in (
                token_ids,
                positions,
                slots,
                page_table,
                kv_lens,
                cu_q_lens,
                np.int32(len(new_tokens)),
                logits_indices,
            )
        )
    )
