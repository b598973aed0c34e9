"""Packing a StepPlan into one bucket: ragged layout, padding into the sink page 0, validation errors."""

from __future__ import annotations

import numpy as np
import pytest

from trellis_jax.runner.buckets import Bucket, BucketOverflowError, BucketSet
from trellis_jax.runner.packing import pack
from trellis_jax.step_plan import SamplingArrays, SequenceWork, StepPlan

BUCKETS = BucketSet(token_buckets=(8, 32), seq_buckets=(2, 4), page_buckets=(4, 8))
PAGE_SIZE, NUM_PAGES, VOCAB = 4, 64, 50


def do_pack(*seqs, max_logprobs=5):
    return pack(
        StepPlan(list(seqs)),
        BUCKETS,
        page_size=PAGE_SIZE,
        num_pages=NUM_PAGES,
        vocab_size=VOCAB,
        max_logprobs=max_logprobs,
    )


PREFILL_CHUNK = SequenceWork("p", token_ids=[11, 12, 13], start_pos=6, page_ids=[9, 3, 7], sample=False)
DECODE = SequenceWork(
    "d",
    token_ids=[21],
    start_pos=4,
    page_ids=[5, 6],
    sample=True,
    sampling=SamplingArrays(temperature=0.7, seed=2**32 + 5, num_logprobs=2),
    rng_step=3,
)


def test_picks_the_smallest_bucket():
    assert do_pack(PREFILL_CHUNK, DECODE).bucket == Bucket(8, 4, 4)


def test_ragged_rows_positions_and_slots():
    inputs = do_pack(PREFILL_CHUNK, DECODE).model_inputs
    np.testing.assert_array_equal(inputs.token_ids[:4], [11, 12, 13, 21])
    np.testing.assert_array_equal(inputs.positions[:4], [6, 7, 8, 4])
    # positions 6, 7 live in page 3 (offsets 2, 3), position 8 in page 7 (offset 0); decode pos 4 in page 6
    np.testing.assert_array_equal(inputs.slot_mapping[:4], [3 * 4 + 2, 3 * 4 + 3, 7 * 4, 6 * 4])
    np.testing.assert_array_equal(inputs.cu_q_lens, [0, 3, 4, 4, 4])
    np.testing.assert_array_equal(inputs.kv_lens, [9, 5, 0, 0])
    np.testing.assert_array_equal(inputs.logits_indices, [2, 3, 0, 0])
    assert int(inputs.num_seqs) == 2


def test_padded_tokens_write_into_the_sink_page():
    inputs = do_pack(PREFILL_CHUNK, DECODE).model_inputs
    np.testing.assert_array_equal(inputs.slot_mapping[4:], 0)
    np.testing.assert_array_equal(inputs.token_ids[4:], 0)


def test_page_table_rows_are_padded_with_the_sink_page():
    inputs = pack(
        StepPlan([DECODE]),
        BucketSet((8,), (1, 2), (4,)),
        page_size=PAGE_SIZE,
        num_pages=NUM_PAGES,
        vocab_size=VOCAB,
        max_logprobs=5,
    ).model_inputs
    np.testing.assert_array_equal(inputs.page_table, [[5, 6, 0, 0], [0, 0, 0, 0]])


def test_padding_sequences_are_empty():
    inputs = pack(
        StepPlan([DECODE]),
        BucketSet((8,), (4,), (4,)),
        page_size=PAGE_SIZE,
        num_pages=NUM_PAGES,
        vocab_size=VOCAB,
        max_logprobs=5,
    ).model_inputs
    np.testing.assert_array_equal(inputs.kv_lens, [5, 0, 0, 0])
    np.testing.assert_array_equal(inputs.cu_q_lens, [0, 1, 1, 1, 1])
    np.testing.assert_array_equal(inputs.page_table[1:], 0)


def test_only_needed_pages_enter_the_table():
    over_allocated = SequenceWork("o", [1], start_pos=2, page_ids=list(range(1, 21)), sample=True)
    packed = do_pack(over_allocated)
    assert packed.bucket.pages_per_seq == 4
    np.testing.assert_array_equal(packed.model_inputs.page_table[0], [1, 0, 0, 0])


def test_sampling_knobs_are_per_row_with_neutral_padding():
    packed = do_pack(PREFILL_CHUNK, DECODE)
    np.testing.assert_allclose(packed.knobs["temperature"], [0.0, 0.7, 0.0, 0.0])
    np.testing.assert_array_equal(packed.knobs["seed"], [0, 5, 0, 0])  # folded into uint32
    np.testing.assert_array_equal(packed.knobs["rng_step"], [0, 3, 0, 0])
    assert packed.sampled_rows == [(1, "d", 2)]
    assert packed.penalties is None


def test_penalty_counts_are_built_only_for_penalised_rows():
    penalised = SequenceWork(
        "r",
        [4],
        start_pos=0,
        page_ids=[2],
        sample=True,
        sampling=SamplingArrays(frequency_penalty=0.5, repetition_penalty=1.2),
        penalty_context=[7, 7, 9],
        prompt_token_ids=[4, 1],
    )
    counts, prompt_mask = do_pack(DECODE, penalised).penalties
    assert counts[0].sum() == 0 and not prompt_mask[0].any()
    assert counts[1, 7] == 2 and counts[1, 9] == 1 and counts[1].sum() == 3
    assert set(np.flatnonzero(prompt_mask[1])) == {1, 4}


@pytest.mark.parametrize(
    "seq, message",
    [
        (SequenceWork("x", [1], 0, [0], True), r"page ids must be in \[1, 64\)"),
        (SequenceWork("x", [1], 0, [64], True), r"page ids must be in \[1, 64\)"),
        (SequenceWork("x", [1, 2], 3, [1], True), "5 tokens need 2 pages"),
        (SequenceWork("x", [50], 0, [1], True), r"token ids must be in \[0, 50\)"),
        (SequenceWork("x", [], 0, [1], True), "at least one token"),
        (SequenceWork("x", [1], -1, [1], True), "start_pos must be >= 0"),
        (SequenceWork("x", [1], 0, [1], True, SamplingArrays(top_p=0.0)), "top_p=0.0"),
        (SequenceWork("x", [1], 0, [1], True, SamplingArrays(temperature=-1.0)), "temperature=-1.0"),
        (SequenceWork("x", [1], 0, [1], True, SamplingArrays(num_logprobs=6)), r"num_logprobs=6 \(need 0..5\)"),
    ],
)
def test_bad_sequences_get_a_clear_error(seq, message):
    with pytest.raises(ValueError, match=message):
        do_pack(seq)


def test_context_past_the_limit_is_rejected():
    with pytest.raises(ValueError, match="9 tokens of context exceed max_context_len=8"):
        pack(
            StepPlan([PREFILL_CHUNK]),
            BUCKETS,
            page_size=PAGE_SIZE,
            num_pages=NUM_PAGES,
            vocab_size=VOCAB,
            max_logprobs=5,
            max_context_len=8,
        )


def test_duplicate_requests_are_rejected():
    with pytest.raises(ValueError, match="duplicates"):
        do_pack(DECODE, DECODE)


def test_plan_past_the_largest_bucket_overflows():
    too_long = SequenceWork("l", list(range(33)), 0, list(range(1, 10)), False)
    with pytest.raises(BucketOverflowError, match="max_num_tokens = 32"):
        do_pack(too_long)
