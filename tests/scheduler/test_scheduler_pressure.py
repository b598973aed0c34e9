"""Memory pressure (evict, preempt, refuse), abort at every stage, and no page ever leaks."""

import random

import pytest

from trellis_jax.scheduler import RequestRejected


def test_prompt_larger_than_the_pool_is_refused(harness):
    h = harness(num_pages=5, page_size=4)  # 4 usable pages = 16 tokens
    with pytest.raises(RequestRejected):
        h.add("big", range(1, 17))


def test_prompt_at_the_context_cap_is_refused(harness):
    h = harness(max_model_len=10)
    with pytest.raises(RequestRejected):
        h.add("a", range(1, 11))


def test_request_that_outgrows_the_pool_alone_finishes_with_length(harness):
    h = harness(num_pages=5, page_size=4)
    h.add("a", range(1, 10), max_tokens=100)
    h.run()
    tokens, reason = h.finished["a"]
    assert reason == "length" and 9 + len(tokens) == 16 + 1  # every slot used, the last token has no KV
    assert h.all_pages_back()


def test_youngest_running_request_is_preempted_and_still_completes(harness):
    h = harness(num_pages=9, page_size=4, max_num_batched_tokens=32)  # 8 usable pages
    h.add("old", [1, 2, 3], max_tokens=16)  # 19 tokens = 5 pages each, 10 > 8
    h.add("young", [4, 5, 6], max_tokens=16)
    h.run()
    assert h.scheduler.stats.num_preemptions >= 1
    assert h.scheduler.requests == {}
    assert {r: f[1] for r, f in h.finished.items()} == {"old": "length", "young": "length"}
    alone = harness()
    alone.add("young", [4, 5, 6], max_tokens=16)
    alone.run()
    assert h.finished["young"] == alone.finished["young"]  # recompute gives the same tokens


def test_lower_priority_request_is_preempted_before_a_younger_important_one(harness):
    h = harness(num_pages=9, page_size=4, max_num_batched_tokens=32)
    h.add("old-unimportant", [1, 2, 3], max_tokens=16, priority=5)
    h.add("young-important", [4, 5, 6], max_tokens=16, priority=0)
    while h.scheduler.stats.num_preemptions == 0:
        h.step()
    assert h.scheduler.requests["old-unimportant"] in h.scheduler.waiting.values()
    h.run()
    assert len(h.finished) == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stress_small_pool_every_request_completes_or_is_refused(harness, seed):
    rng = random.Random(seed)
    h = harness(num_pages=20, page_size=4, max_num_batched_tokens=24, max_num_seqs=8)
    prefixes = [[rng.randrange(1, 250) for _ in range(rng.randrange(4, 40))] for _ in range(4)]
    added, refused, aborted, prompts = set(), set(), set(), {}
    for i in range(60):
        prompt = rng.choice(prefixes)[: rng.randrange(1, 40)] + [
            rng.randrange(1, 250) for _ in range(rng.randrange(1, 30))
        ]
        prompts[f"r{i}"] = prompt
        try:
            h.add(f"r{i}", prompt, max_tokens=rng.randrange(1, 30))
            added.add(f"r{i}")
        except RequestRejected:
            refused.add(f"r{i}")
        if rng.random() < 0.5:
            h.step()  # check_integrity() runs after every step
        if rng.random() < 0.05 and h.scheduler.requests:
            victim = rng.choice(sorted(h.scheduler.requests))
            assert h.scheduler.abort(victim)
            aborted.add(victim)
    h.run()
    assert set(h.finished) == added - aborted
    for request_id, (tokens, _) in h.finished.items():  # KV read back through shared pages is right
        assert tokens == sum_oracle(prompts[request_id], len(tokens))
    assert all(reason in ("length", "stop") for _, reason in h.finished.values())
    assert h.scheduler.requests == {} and not h.scheduler.running and not h.scheduler.waiting
    assert h.all_pages_back()


def sum_oracle(prompt, count):
    """FakeRunner "sum" by hand: each token is the sum of everything before it, mod 258."""
    sequence = list(prompt)
    for _ in range(count):
        sequence.append(sum(sequence) % 258)
    return sequence[len(prompt) :]


def test_abort_while_waiting(harness):
    h = harness(max_num_seqs=1)
    h.add("a", [1, 2, 3], max_tokens=5)
    h.add("b", [4, 5, 6], max_tokens=5)
    h.step()
    assert h.scheduler.abort("b")
    h.run()
    assert "b" not in h.finished and h.all_pages_back()


def test_abort_mid_prefill_frees_its_pages_and_keeps_published_ones(harness):
    h = harness(max_num_batched_tokens=8)
    h.add("a", range(1, 41), max_tokens=5)
    h.step()
    h.step()
    assert h.scheduler.abort("a")
    h.cache.check_integrity()
    assert h.cache.num_locked_pages == 0 and h.cache.num_private_pages == 0
    assert h.cache.match(list(range(1, 41)), "").num_cached_tokens == 16
    assert h.all_pages_back()


def test_abort_while_decoding(harness):
    h = harness()
    h.add("a", [1, 2, 3], max_tokens=50)
    for _ in range(3):
        h.step()
    assert h.scheduler.abort("a")
    h.cache.check_integrity()
    assert h.all_pages_back() and not h.scheduler.has_unfinished()


def test_abort_after_finish_and_unknown_id_return_false(harness):
    h = harness()
    h.add("a", [1], max_tokens=1)
    h.run()
    assert not h.scheduler.abort("a")
    assert not h.scheduler.abort("nope")


def test_abort_between_schedule_and_commit_is_ignored_by_commit(harness):
    h = harness()
    h.add("a", [1, 2, 3], max_tokens=5)
    plan = h.scheduler.schedule()
    outputs = h.runner.run(plan)
    h.scheduler.abort("a")
    assert h.scheduler.commit(plan, outputs) == []
    assert h.all_pages_back()


def test_waiting_request_with_an_inflight_prefix_defers_instead_of_recomputing(harness):
    h = harness(max_num_batched_tokens=8)
    prefix = list(range(1, 33))
    h.add("a", prefix + [100], max_tokens=1)
    h.step()
    h.add("b", prefix + [200], max_tokens=1)
    plan, _ = h.step()
    assert [s.request_id for s in plan.sequences] == ["a"]
    h.run()
    b_positions = [(start, n) for rid, start, n in h.runner.computed if rid == "b"]
    assert b_positions and b_positions[0][0] == 32
