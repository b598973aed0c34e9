"""Routing policies over in-memory workers: who gets which prompt, and when load overrides the cache."""

import pytest

from trellis_jax.router.keys import RouteKey
from trellis_jax.router.policy import Policy
from trellis_jax.router.prefix_index import PrefixIndex
from trellis_jax.router.workers import Worker

SYSTEMS = [f"system prompt number {i}: " + "you are a helpful assistant. " * 4 for i in range(6)]


def workers(n=3):
    return [Worker(f"http://127.0.0.1:{9000 + i}") for i in range(n)]


def policy(name="cache_aware", **options):
    return Policy(name, PrefixIndex(block_size=8, max_blocks=10_000), **options)


def test_cache_aware_sends_every_question_on_one_system_prompt_to_one_worker():
    p, pool = policy(), workers()
    chosen = {p.choose(RouteKey("", SYSTEMS[0] + f"question {q}?"), pool).worker.url for q in range(10)}
    assert len(chosen) == 1


def test_round_robin_spreads_one_system_prompt_over_every_worker():
    p, pool = policy("round_robin"), workers()
    chosen = {p.choose(RouteKey("", SYSTEMS[0] + f"question {q}?"), pool).worker.url for q in range(10)}
    assert len(chosen) == 3


def test_cache_aware_spreads_new_prefixes_over_the_workers():
    p, pool = policy(), workers()
    chosen = [p.choose(RouteKey("", s), pool).worker.url for s in SYSTEMS[:3]]
    assert len(set(chosen)) == 3


def test_the_decision_reports_the_match_and_why():
    p, pool = policy(), workers()
    first = p.choose(RouteKey("", SYSTEMS[0] + "q1"), pool)
    second = p.choose(RouteKey("", SYSTEMS[0] + "q2"), pool)
    assert first.reason == "no_match" and first.matched == 0
    assert second.reason == "cache_hit" and second.matched >= len(SYSTEMS[0]) - 8


def test_an_imbalance_past_the_threshold_sends_the_request_to_the_idlest_worker():
    p, pool = policy(imbalance_threshold=2), workers()
    home = p.choose(RouteKey("", SYSTEMS[0] + "q0"), pool).worker
    home.in_flight = 3
    decision = p.choose(RouteKey("", SYSTEMS[0] + "q1"), pool)
    assert decision.worker is not home and decision.reason == "imbalance"


def test_an_imbalance_within_the_threshold_keeps_the_cached_worker():
    p, pool = policy(imbalance_threshold=2), workers()
    home = p.choose(RouteKey("", SYSTEMS[0] + "q0"), pool).worker
    home.in_flight = 2
    assert p.choose(RouteKey("", SYSTEMS[0] + "q1"), pool).worker is home


def test_a_match_below_the_cache_threshold_routes_by_load():
    p, pool = policy(cache_threshold=0.9), workers()
    home = p.choose(RouteKey("", SYSTEMS[0]), pool).worker
    home.in_flight = 1
    decision = p.choose(RouteKey("", SYSTEMS[0] + "a long question " * 10), pool)
    assert decision.worker is not home and decision.reason == "no_match"


def test_another_tenants_identical_prompt_does_not_count_as_a_match():
    p, pool = policy(), workers()
    p.choose(RouteKey("tenant-a", SYSTEMS[0] + "q0"), pool)
    assert p.choose(RouteKey("tenant-b", SYSTEMS[0] + "q0"), pool).matched == 0


def test_least_load_picks_the_worker_with_fewest_requests_in_flight():
    p, pool = policy("least_load"), workers()
    pool[0].in_flight, pool[1].in_flight, pool[2].in_flight = 2, 0, 1
    assert p.choose(RouteKey("", "x"), pool).worker is pool[1]


def test_an_unknown_policy_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="cache_aware, round_robin, least_load"):
        policy("random")
