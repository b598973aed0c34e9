"""Prefix sharing through the radix cache: computed once, published page by page, equal outputs."""

import pytest

from trellis_jax.scheduler import SCHEDULE_POLICIES

PREFIX = list(range(1, 61))  # 60 tokens = 15 pages of 4


def computed_positions(h, request_id):
    return sum(n for rid, _, n in h.runner.computed if rid == request_id)


def test_two_requests_arriving_together_compute_the_shared_prefix_once(harness):
    h = harness(max_num_batched_tokens=16)
    h.add("a", PREFIX + [100, 101], max_tokens=2)
    h.add("b", PREFIX + [200, 201], max_tokens=2)
    h.run()
    prompt_tokens_computed = h.runner.num_tokens_computed - 2  # minus one decode token each
    assert prompt_tokens_computed == len(PREFIX) + 2 + 2
    assert h.finished["a"][1] == h.finished["b"][1] == "length"


def test_waiting_request_matches_pages_as_they_are_filled(harness):
    h = harness(max_num_batched_tokens=16)
    h.add("a", PREFIX + [100], max_tokens=1)
    h.step()  # first 16-token chunk of "a": 4 full pages, published at once
    assert h.cache.match(PREFIX, "").num_cached_tokens == 16


def test_later_request_reports_its_cached_prompt_tokens(harness):
    h = harness()
    h.add("a", PREFIX + [100], max_tokens=1)
    h.run()
    b = h.add("b", PREFIX + [200, 201], max_tokens=1)
    h.run()
    assert b.num_cached_tokens == len(PREFIX)
    assert computed_positions(h, "b") == 2


def run_workload(harness, enabled, num_pages, policy="lpm"):
    h = harness(
        num_pages=num_pages,
        max_num_batched_tokens=24,
        max_num_seqs=6,
        enable_prefix_cache=enabled,
        schedule_policy=policy,
    )
    system = list(range(1, 41))
    for i in range(12):
        h.add(f"q{i}", system + [100 + i, 150 + i % 3, 7], max_tokens=6)
    h.add("turn1", system + [90, 91, 92, 93, 94], max_tokens=5)
    h.add("turn2", system + [90, 91, 92, 93, 94, 95, 96, 97, 98, 99], max_tokens=5)
    h.run()
    return h


@pytest.mark.parametrize("policy", SCHEDULE_POLICIES)
def test_cache_on_and_off_give_identical_outputs_under_pressure(harness, policy):
    on = run_workload(harness, True, 24, policy)
    off = run_workload(harness, False, 24, policy)
    assert on.finished == off.finished
    assert on.runner.num_tokens_computed < off.runner.num_tokens_computed
    assert on.all_pages_back() and off.all_pages_back()


def test_n_sequences_share_the_prompt_pages(harness):
    h = harness(max_num_batched_tokens=64)
    for i in range(4):
        h.add(f"a#{i}", PREFIX + [7], max_tokens=3)
    h.run()
    assert h.scheduler.stats.num_prefill_tokens_computed == len(PREFIX) + 1 + 3 * 1
    assert h.scheduler.stats.peak_pages_in_use <= 16 + 4
