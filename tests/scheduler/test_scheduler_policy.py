"""Admission order policies."""

import pytest

from trellis_jax.scheduler.policy import make_policy
from trellis_jax.scheduler.request import Request
from trellis_jax.step_plan import SamplingArrays


def req(i, tokens, priority=0):
    return Request(f"r{i}", list(tokens), SamplingArrays(), None, frozenset(), "", priority, i)


def ids(requests):
    return [r.request_id for r in requests]


def test_fcfs_orders_by_arrival():
    waiting = [req(2, [1]), req(0, [1]), req(1, [1])]
    assert ids(make_policy("fcfs", page_size=4).order(waiting, lambda r: 0)) == ["r0", "r1", "r2"]


def test_priority_orders_by_priority_then_arrival():
    waiting = [req(0, [1], priority=5), req(1, [1], priority=1), req(2, [1], priority=1)]
    assert ids(make_policy("priority", page_size=4).order(waiting, lambda r: 0)) == ["r1", "r2", "r0"]


def test_lpm_orders_by_cached_prefix_length():
    waiting = [req(0, [1]), req(1, [2]), req(2, [3])]
    cached = {"r0": 0, "r1": 32, "r2": 8}
    assert ids(make_policy("lpm", page_size=4).order(waiting, lambda r: cached[r.request_id])) == ["r1", "r2", "r0"]


def test_lpm_window_matches_only_the_oldest_window():
    waiting = [req(i, [i]) for i in range(1000)]
    calls = []
    order = make_policy("lpm-window", page_size=4, lpm_window=16).order(waiting, lambda r: calls.append(r) or r.arrival)
    assert len(calls) == 16
    assert ids(order[:16]) == [f"r{i}" for i in range(15, -1, -1)]
    assert ids(order[16:]) == [f"r{i}" for i in range(16, 1000)]


def test_dfs_weight_runs_the_largest_prefix_group_first_and_keeps_groups_together():
    a, b = [1, 2, 3, 4], [9, 9, 9, 9]
    waiting = [
        req(0, a + [5, 5, 5, 5, 0]),
        req(1, b + [6, 6, 6, 6, 0]),
        req(2, b + [7, 7, 7, 7, 0]),
        req(3, a + [8, 8, 8, 8, 0]),
        req(4, b + [6, 6, 6, 6, 1]),
    ]
    order = ids(make_policy("dfs-weight", page_size=4).order(waiting, lambda r: 0))
    assert order[:3] in (["r1", "r4", "r2"], ["r4", "r1", "r2"])  # b-group (3) first, its 2-subgroup first
    assert order[3:] in (["r0", "r3"], ["r3", "r0"])


def test_unknown_policy_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown schedule policy"):
        make_policy("random", page_size=4)


def test_lpm_window_bounds_tree_lookups_per_step_with_thousands_waiting(harness):
    h = harness(num_pages=256, schedule_policy="lpm-window", lpm_window=32, max_num_seqs=4)
    for i in range(2000):
        h.add(f"r{i}", [1 + i % 200, 2, 3, 4, 5, 6, 7, 8, 9], max_tokens=2)
    peeks = []
    original = h.cache.peek
    h.cache.peek = lambda tokens, namespace="": peeks.append(1) or original(tokens, namespace)
    h.step()
    assert 0 < len(peeks) <= 32
