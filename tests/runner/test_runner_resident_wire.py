"""The resident step state on its own (no model): a resident upload, expanded on the device from the slot rows,
is exactly the wire pack() makes of the same plan, step after step (joins, page growth, slot reuse, knobs)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from trellis_jax.runner import wire
from trellis_jax.runner.buckets import BucketSet
from trellis_jax.runner.packing import pack
from trellis_jax.runner.resident import ResidentSlots
from trellis_jax.runner.resident_view import expand
from trellis_jax.step_plan import PENDING_TOKEN, SamplingArrays, SequenceWork, StepPlan

PAGE_SIZE, NUM_PAGES, VOCAB, MAX_CONTEXT = 4, 200, 101, 64
BUCKETS = BucketSet((2, 4, 8), (1, 2, 4), (4, 16))


class Bench:
    """A ResidentSlots and its device state driven step by step, each step checked against pack()."""

    def __init__(self, num_slots: int = 4) -> None:
        self.slots = ResidentSlots(num_slots, BUCKETS.max_pages_per_seq)
        self.state = jnp.asarray(self.slots.device_state())

    def pack(self, plan: StepPlan):
        return pack(
            plan,
            BUCKETS,
            page_size=PAGE_SIZE,
            num_pages=NUM_PAGES,
            vocab_size=VOCAB,
            max_logprobs=5,
            max_context_len=MAX_CONTEXT,
        )

    def step(self, plan: StepPlan):
        """Expand the resident upload, or the full wire with its stored rows' slots, as the device does; check
        the wire the model reads against pack()'s (less the slot column, which the model never reads)."""
        resident = self.slots.prepare(
            plan,
            self.pack,
            BUCKETS,
            page_size=PAGE_SIZE,
            num_pages=NUM_PAGES,
            vocab_size=VOCAB,
            max_context_len=MAX_CONTEXT,
        )
        packed = self.pack(plan)
        feed = np.full(packed.bucket.num_tokens, -1, np.int32)
        for row, _ in packed.pending_rows:
            feed[row] = row  # any fed row: the wire carries it either way
        expected = wire.encode(packed.model_inputs, packed.knobs, feed)
        if resident is None:
            stored = self.slots.full_step(plan, packed, PAGE_SIZE)
            buffers = wire.encode(packed.model_inputs, packed.knobs, feed, stored and stored.joins)
        else:
            stored, buffers = resident, self.slots.upload(resident, feed)
        tokens, seqs, self.state = expand(*(jnp.asarray(b) for b in buffers), self.state, page_size=PAGE_SIZE)
        self.slots.record(self.state, stored)
        np.testing.assert_array_equal(np.asarray(tokens), expected[0])
        model_columns = np.arange(expected[1].shape[1]) != expected[1].shape[1] - wire.NUM_COLUMNS + wire.COLUMN["slot"]
        np.testing.assert_array_equal(np.asarray(seqs)[:, model_columns], expected[1][:, model_columns])
        return resident


HOT = SamplingArrays(temperature=0.7, top_k=5, top_p=0.9, min_p=0.05, seed=11, num_logprobs=3)
PENALISED = SamplingArrays(presence_penalty=0.5, frequency_penalty=0.25, repetition_penalty=1.2)


def decode(rid, token, pos, first_page, sampling=SamplingArrays(), rng_step=None):
    """A decode row at position `pos` over consecutive pages from `first_page` (as many as it needs)."""
    pages = list(range(first_page, first_page + pos // PAGE_SIZE + 1))
    return SequenceWork(rid, [token], pos, pages, True, sampling, rng_step=pos if rng_step is None else rng_step)


def test_decode_rows_continue_and_grow_pages_exactly_as_packed():
    bench = Bench()
    for pos in range(5, 19):  # crosses page boundaries at 8, 12 and 16
        rows = [decode("a", 3 + pos % 7, pos, 10, HOT), decode("b", PENDING_TOKEN, pos + 2, 40, PENALISED)]
        bench.step(StepPlan(rows))
    stats = bench.slots.stats
    assert (stats["joined"], stats["steps"]) == (2, 14)
    assert stats["continued"] == 26 and stats["grown"] == 7


def test_a_row_that_does_not_continue_its_slot_joins_again():
    bench = Bench()
    bench.step(StepPlan([decode("a", 1, 6, 10)]))
    bench.step(StepPlan([decode("a", 2, 7, 10)]))
    bench.step(StepPlan([decode("a", 3, 3, 60)]))  # recomputed elsewhere (a preemption): new pages, new position
    bench.step(StepPlan([decode("a", 4, 4, 60, HOT)]))  # new knobs
    bench.step(StepPlan([decode("a", 5, 5, 60, HOT, rng_step=9)]))  # rng_step not moved on by one
    assert bench.slots.stats["joined"] == 4 and bench.slots.stats["continued"] == 1


def test_a_full_step_stores_its_sampling_rows_and_leaves_the_others():
    bench = Bench()
    bench.step(StepPlan([decode("a", 1, 6, 10), decode("b", 2, 9, 30), decode("d", 3, 2, 70)]))
    prefill = SequenceWork("a", [7, 8], 7, [10, 11, 12], True, rng_step=7)  # two tokens: a full step
    chunk = SequenceWork("d", [4, 5], 3, [70, 71], False)  # moves d on without sampling: not stored
    assert bench.step(StepPlan([prefill, chunk, SequenceWork("c", [1, 2, 3], 0, [50], True)])) is None
    assert bench.slots.stats["stored"] == 2
    rows = [decode("a", 4, 9, 10, rng_step=8), decode("b", 5, 10, 30), decode("c", 6, 3, 50, rng_step=1)]
    bench.step(StepPlan([*rows, decode("d", 6, 5, 70, rng_step=3)]))
    assert bench.slots.stats["joined"] == 4  # a, b, d at first; then only d (a and c were stored, b untouched)


def test_slots_of_ids_a_plan_lacks_are_reused_least_recently_used_first():
    bench = Bench(num_slots=2)
    bench.step(StepPlan([decode("a", 1, 5, 10), decode("b", 1, 5, 20)]))
    bench.step(StepPlan([decode("a", 2, 6, 10)]))
    bench.step(StepPlan([decode("a", 3, 7, 10), decode("c", 1, 5, 30)]))  # takes b's slot (b idle longest)
    bench.step(StepPlan([decode("a", 4, 8, 10), decode("c", 2, 6, 30)]))
    bench.step(StepPlan([decode("b", 2, 6, 20), decode("c", 3, 7, 30)]))  # b joins again, into a's slot
    assert bench.slots.stats["joined"] == 4


def test_multi_step_and_page_copy_plans_travel_as_a_full_wire():
    bench = Bench()
    assert bench.step(StepPlan([decode("a", 1, 5, 10)], page_copies=[(1, 2)])) is None
    rows = [SequenceWork("a", [1], 5, [10, 11, 12], True, num_steps=2)]
    assert (
        bench.slots.prepare(
            StepPlan(rows, decode_steps=2),
            bench.pack,
            BUCKETS,
            page_size=PAGE_SIZE,
            num_pages=NUM_PAGES,
            vocab_size=VOCAB,
            max_context_len=MAX_CONTEXT,
        )
        is None
    )


@pytest.mark.parametrize(
    "row",
    [
        decode("a", VOCAB, 7, 10),  # token id out of range
        SequenceWork("a", [1], 8, [10, 11, NUM_PAGES], True, rng_step=8),  # a grown page outside the pool
        SequenceWork("a", [1], 8, [10, 11], True, rng_step=8),  # no page for position 8
    ],
)
def test_a_continuing_row_with_a_bad_value_is_refused_like_pack(row):
    bench = Bench()
    bench.step(StepPlan([decode("a", 1, 6, 10)]))
    bench.step(StepPlan([decode("a", 1, 7, 10)]))
    with pytest.raises(ValueError):
        bench.step(StepPlan([row]))
