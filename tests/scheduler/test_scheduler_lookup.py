"""Prompt-lookup speculative decoding: the n-gram index, and the scheduler verifying its guesses."""

import pytest

from trellis_jax.scheduler import SchedulerConfig
from trellis_jax.scheduler.lookup import NgramIndex
from trellis_jax.scheduler.scheduler import DRAFT_MARK
from trellis_jax.step_plan import SamplingArrays

RUN = list(range(10, 30))  # "increment" mode continues a run: every guess from it is right


def test_index_proposes_what_followed_the_latest_occurrence_of_the_longest_tail():
    tokens = [1, 2, 3, 9, 8, 2, 3, 7, 6, 5, 1, 2, 3]
    # Tail (1, 2, 3) last occurred at 0..2, followed by 9 8 2; (2, 3) alone would point at 7 (later).
    assert NgramIndex(max_ngram=3).propose(tokens, 3) == [9, 8, 2]
    assert NgramIndex(max_ngram=2).propose(tokens, 3) == [7, 6, 5]


def test_index_proposes_nothing_for_a_tail_never_seen_before():
    assert NgramIndex().propose([1, 2, 3, 4], 3) == []
    assert NgramIndex().propose([5], 3) == []


def test_index_stops_at_the_end_of_the_context():
    assert NgramIndex().propose([4, 4], 3) == [4]  # the earlier 4 is followed only by the tail itself


def test_index_grown_step_by_step_answers_as_a_fresh_one():
    tokens = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2, 6, 4, 3, 3, 8, 3, 2, 7, 9, 5]
    grown = NgramIndex()
    for end in range(1, len(tokens) + 1):
        assert grown.propose(tokens[:end], 4) == NgramIndex().propose(tokens[:end], 4), end


def test_index_rejects_bad_ngram_sizes():
    with pytest.raises(ValueError, match="min_ngram"):
        NgramIndex(max_ngram=2, min_ngram=3)


def _outputs_and_steps(harness, prompts, *, mode="increment", vocab_size=258, **options):
    h = harness(**options)
    h.runner.mode, h.runner.vocab_size = mode, vocab_size
    for i, (prompt, max_tokens) in enumerate(prompts):
        h.add(f"r{i}", prompt, max_tokens=max_tokens)
    h.run()
    assert h.all_pages_back()
    return {rid: tokens for rid, (tokens, _) in h.finished.items()}, h


def test_accepted_guesses_give_plain_greedy_tokens_in_fewer_steps(harness):
    prompts = [(RUN + RUN[:3], 12)]
    plain, h_plain = _outputs_and_steps(harness, prompts)
    fast, h_fast = _outputs_and_steps(harness, prompts, num_lookup_tokens=3)
    assert fast == plain
    assert len(h_fast.plans) < len(h_plain.plans) - 5
    assert h_fast.scheduler.stats.num_accepted_draft_tokens > 0


def test_rejected_guesses_leave_no_trace_in_the_kv(harness):
    # "sum" mode reads the whole context back through the page table: a guess's KV landing on a kept
    # position, or a stale one being read, would change every later token. A 5-token vocabulary makes
    # the context repeat itself, so there are many guesses, right and wrong.
    prompts = [([1, 2, 1, 2, 1, 2, 3], 20), ([4, 4, 4, 4, 4, 0], 17), ([3, 1, 2, 3, 1], 9)]
    plain, _ = _outputs_and_steps(harness, prompts, mode="sum", vocab_size=5)
    spec, h = _outputs_and_steps(
        harness, prompts, mode="sum", vocab_size=5, num_lookup_tokens=4, lookup_max_step_tokens=16
    )
    assert spec == plain
    stats = h.scheduler.stats
    assert stats.num_draft_tokens - stats.num_accepted_draft_tokens >= 5 and stats.num_accepted_draft_tokens >= 3


def test_guesses_never_run_past_max_tokens(harness):
    outputs, h = _outputs_and_steps(harness, [(RUN + RUN[:2], 5)], num_lookup_tokens=4)
    assert outputs["r0"] == [12, 13, 14, 15, 16]
    assert h.finished["r0"][1] == "length"
    drafted = [s for p in h.plans for s in p.sequences]
    assert max(s.kv_len for s in drafted) <= len(RUN) + 2 + 5 - 1  # no row for a token past the fifth


def test_a_stop_token_among_accepted_guesses_ends_the_request_there(harness):
    h = harness(num_lookup_tokens=4)
    h.runner.mode = "increment"
    h.scheduler.add_request("r", RUN + RUN[:2], SamplingArrays(), max_tokens=20, stop_token_ids=[15])
    h.outputs["r"] = []
    h.run()
    assert h.finished["r"] == ([12, 13, 14, 15], "stop")
    assert h.all_pages_back()


@pytest.mark.parametrize(
    "sampling",
    [
        SamplingArrays(temperature=0.7, seed=1),
        SamplingArrays(presence_penalty=0.5),
        SamplingArrays(repetition_penalty=1.2),
    ],
)
def test_sampled_or_penalized_requests_get_no_guesses(harness, sampling):
    h = harness(num_lookup_tokens=3)
    h.scheduler.add_request("r", RUN + RUN[:3], sampling, max_tokens=6)
    h.outputs["r"] = []
    h.run()
    assert not any(DRAFT_MARK in s.request_id for p in h.plans for s in p.sequences)


def test_guesses_respect_the_step_token_limit_and_the_sequence_slots(harness):
    prompts = [(RUN[i:] + RUN[i : i + 3], 10) for i in range(6)]
    _, h = _outputs_and_steps(harness, prompts, num_lookup_tokens=3, lookup_max_step_tokens=8, max_num_seqs=7)
    for plan in h.plans:
        guesses = [s for s in plan.sequences if DRAFT_MARK in s.request_id]
        if guesses:
            assert plan.num_tokens <= 8 and len(plan.sequences) <= 7
    assert h.scheduler.stats.num_draft_tokens > 0


def test_guesses_take_no_pages_running_prefills_still_need(harness):
    # 3 usable pages of 4 tokens: the decode's guesses would need a fourth page, which does not exist.
    outputs, h = _outputs_and_steps(
        harness, [([1, 2, 3, 1, 2, 3, 1, 2, 3], 3)], mode="increment", num_pages=4, num_lookup_tokens=3
    )
    assert outputs["r0"] == [4, 5, 6]
    assert h.scheduler.stats.num_preemptions == 0


def test_a_request_id_with_nul_is_rejected(harness):
    h = harness()
    with pytest.raises(ValueError, match="NUL"):
        h.add("a\x00draft0", [1, 2, 3])


@pytest.mark.parametrize("bad", [-1, True, 1.5])
def test_a_bad_lookup_token_count_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="num_lookup_tokens"):
        SchedulerConfig(num_lookup_tokens=bad)
