"""Device side of the resident step state: a decode step's wire rebuilt from per-slot rows kept on the device.

Contract:
  initial_state(num_slots, max_pages) -> np.ndarray   zeros [num_slots + 1, max_pages + wire.NUM_COLUMNS] int32;
      row num_slots is the dump row that padding rows read and write
  expand(tokens, seqs, state, *, page_size) -> (tokens, seqs, state)   runs first inside the jitted step
A full step (seqs' num_seqs column >= 1: the wire of runner/wire.py) passes through; each of its rows with a slot
column s >= 0 is stored in slot row s (its page-table row padded with zeros), so its next decode continues it.
A resident step (seqs[0]'s num_seqs column == RESIDENT; decode only, so token row b is sequence row b) carries
per token row (token id, slot, grown page or 0, feed); seqs row b is either zeros or a joined row (its cu_q_end
column == JOINED): this step's whole wire row for that sequence, as pack() made it. Each live row takes its
slot's stored row (the wire row of the last step it ran in) with kv_len and rng_step moved on by one, or its
joined row; writes its grown page at (kv_len - 1) // page_size; and is stored back. The wire the model then
reads is what pack() would have made of the plan: padding rows neutral, page-table entries past a row's pages 0.
Why: the host sends per decode row its slot and at most one new page, instead of packing and validating every
row's page table and sampling knobs each step (runner/resident.py decides which rows join).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from trellis_jax.runner import wire
from trellis_jax.step_plan import SamplingArrays

RESIDENT = -1  # in seqs[0]'s num_seqs column: a resident step (a full step always has num_seqs >= 1)
JOINED = 1  # in a resident step's seqs row, cu_q_end column: this row brings its whole wire row

_C = wire.COLUMN  # column offsets after the page-table row
_FLOATS = ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty")


def initial_state(num_slots: int, max_pages: int) -> np.ndarray:
    return np.zeros((num_slots + 1, max_pages + wire.NUM_COLUMNS), np.int32)


def neutral_columns() -> np.ndarray:
    """[NUM_COLUMNS] int32: a padding row's columns as pack() writes them (kv_len 0, neutral knobs); the step
    fills cu_q_end, logits_indices and num_seqs."""
    neutral = SamplingArrays()
    row = np.zeros(wire.NUM_COLUMNS, np.int32)
    for name in _FLOATS:
        row[_C[name]] = np.float32(getattr(neutral, name)).view(np.int32)
    return row


_NEUTRAL = neutral_columns()


def expand(tokens: jax.Array, seqs: jax.Array, state: jax.Array, *, page_size: int):
    """(tokens [T, 4], seqs [S, P + C], state [N + 1, W + C]) -> the same three, resident steps rebuilt."""
    resident = seqs[0, seqs.shape[1] - wire.NUM_COLUMNS + _C["num_seqs"]] == RESIDENT
    rebuilt_tokens, rebuilt_seqs, moved_state = _rebuild(tokens, seqs, state, page_size)
    return (
        jnp.where(resident, rebuilt_tokens, tokens),
        jnp.where(resident, rebuilt_seqs, seqs),
        jnp.where(resident, moved_state, _store_full(seqs, state)),
    )


def _store_full(seqs, state):
    """A full step's rows stored in the slots their slot column names (the others land in the dump row)."""
    pages, max_pages = seqs.shape[1] - wire.NUM_COLUMNS, state.shape[1] - wire.NUM_COLUMNS
    dump = state.shape[0] - 1
    slot = seqs[:, pages + _C["slot"]]
    slot = jnp.where((slot >= 0) & (slot < dump), slot, dump)
    rows = jnp.concatenate(
        [seqs[:, :pages], jnp.zeros((seqs.shape[0], max_pages - pages), jnp.int32), seqs[:, pages:]], axis=1
    )
    return state.at[slot].set(rows)


def _rebuild(tokens, seqs, state, page_size):
    """The resident reading of the inputs (computed on any step; expand keeps it only for resident ones)."""
    num_tokens, (num_rows, width) = tokens.shape[0], seqs.shape
    pages, max_pages = width - wire.NUM_COLUMNS, state.shape[1] - wire.NUM_COLUMNS
    dump = state.shape[0] - 1
    shared = min(num_tokens, num_rows)  # live rows are below both
    slot = jnp.full(num_rows, dump, jnp.int32).at[:shared].set(jnp.clip(tokens[:shared, 1], 0, dump))
    grown = jnp.zeros(num_rows, jnp.int32).at[:shared].set(tokens[:shared, 2])
    live = slot != dump

    stored = state[slot]  # [S, W + C] the wire row of each slot's last step
    advanced = stored.at[:, max_pages + _C["kv_lens"]].add(1).at[:, max_pages + _C["rng_step"]].add(1)
    joined_row = jnp.concatenate(
        [seqs[:, :pages], jnp.zeros((num_rows, max_pages - pages), jnp.int32), seqs[:, pages:]], axis=1
    )
    joined = seqs[:, pages + _C["cu_q_end"]] == JOINED
    row = jnp.where(joined[:, None], joined_row, advanced)
    kv_lens = row[:, max_pages + _C["kv_lens"]]
    at_grown = jnp.arange(max_pages)[None, :] == ((kv_lens - 1) // page_size)[:, None]
    table = jnp.where(at_grown & (grown > 0)[:, None], grown[:, None], row[:, :max_pages])  # [S, W]
    row = jnp.concatenate([table, row[:, max_pages:]], axis=1)
    moved_state = state.at[slot].set(row)  # live slots are distinct; padding rows all land in the dump row

    count = jnp.sum(live).astype(jnp.int32)
    index = jnp.arange(num_rows, dtype=jnp.int32)
    columns = jnp.where(live[:, None], row[:, max_pages:], jnp.asarray(_NEUTRAL)[None, :])
    columns = (
        columns.at[:, _C["cu_q_end"]]
        .set(jnp.minimum(index + 1, count))
        .at[:, _C["logits_indices"]]
        .set(jnp.where(live, index, 0))
        .at[:, _C["num_seqs"]]
        .set(count)
        .at[:, _C["slot"]]
        .set(-1)
    )
    rebuilt_seqs = jnp.concatenate([jnp.where(live[:, None], table[:, :pages], 0), columns], axis=1)

    position = jnp.where(live, kv_lens - 1, 0)
    page = jnp.take_along_axis(table, jnp.clip(position // page_size, 0, max_pages - 1)[:, None], axis=1)[:, 0]
    kv_slot = jnp.where(live, page * page_size + position % page_size, 0)
    token_live = jnp.zeros(num_tokens, jnp.bool_).at[:shared].set(live[:shared])
    positions = jnp.zeros(num_tokens, jnp.int32).at[:shared].set(position[:shared])
    kv_slots = jnp.zeros(num_tokens, jnp.int32).at[:shared].set(kv_slot[:shared])
    rebuilt_tokens = jnp.stack(
        [
            jnp.where(token_live, tokens[:, 0], 0),
            positions,
            kv_slots,
            jnp.where(token_live, tokens[:, 3], -1),
        ],
        axis=1,
    )
    return rebuilt_tokens, rebuilt_seqs, moved_state
