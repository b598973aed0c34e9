"""The tier simulation: exact counts on hand-made traces, the reload rule, the per-tier bounds, the config.

`single_page_trace("abcdabcd")` with a pool of 4 pages is a paging cache of 3 tree pages (see
ablate_traces.py): every request of the second round misses L1 (LRU evicts exactly the page needed next).
"""

import pytest
from ablate_traces import single_page_trace
from hypothesis import given, settings
from hypothesis import strategies as st

from trellis_jax.ablate import ReplayConfig, optimal, replay
from trellis_jax.ablate.policies import arc  # noqa: F401  (registers "arc")
from trellis_jax.ablate.tier_bounds import cumulative_bounds, time_saved_bound
from trellis_jax.ablate.tiered_replay import tiered_replay
from trellis_jax.ablate.tiers import DEFAULT_KV_BYTES_PER_TOKEN, Capacity, TierConfig, parse_capacity
from trellis_jax.ablate.trace import Trace, TraceRequest
from trellis_jax.cache import policy_names

CYCLE = single_page_trace("abcdabcd")  # pages of 2 tokens
L1 = ReplayConfig(num_pages=4, page_size=2, policy="lru", check_integrity=True)


def tiers(l2=0, l3=0, **kw) -> TierConfig:
    return TierConfig(Capacity(l2), Capacity(l3), **kw)


def test_without_lower_tiers_the_cycle_never_hits():
    assert replay(CYCLE, L1).hit_tokens == 0
    assert tiered_replay(CYCLE, L1, tiers()).replay.hit_tokens == 0


def test_l2_turns_every_second_round_miss_into_a_reload():
    # round 1: d evicts a; round 2: each request evicts the page the next one needs, which L2 (4 pages) holds
    result = tiered_replay(CYCLE, L1, tiers(l2=4))
    assert result.tier_tokens.sum(axis=1).tolist() == [0, 8, 0]
    assert result.replay.cached_tokens.tolist() == [0, 0, 0, 0, 2, 2, 2, 2]
    c = result.counters[2]
    # a, b, c, d written once each; a's second eviction (by d) finds its copy and only refreshes it
    assert (c.demoted_pages, c.reloaded_pages, c.dropped_pages, c.declined_pages) == (4, 4, 0, 0)
    assert result.reloaded_bytes(2) == 8 * DEFAULT_KV_BYTES_PER_TOKEN
    assert result.recomputed_tokens == CYCLE.num_prompt_tokens - 8


def test_a_one_page_l2_keeps_the_page_it_is_reloading():
    # L2 = {a}. a: pinned while b's demotion needs room, so b is dropped; a reloads. b: missing; c pushes a
    # out. c: hit, d dropped. d: missing. Hits: a and c.
    result = tiered_replay(CYCLE, L1, tiers(l2=1))
    assert result.replay.cached_tokens.tolist() == [0, 0, 0, 0, 2, 0, 2, 0]
    assert (result.counters[2].demoted_pages, result.counters[2].dropped_pages) == (5, 4)


def test_l3_alone_serves_the_same_reloads_from_disk():
    result = tiered_replay(CYCLE, L1, tiers(l3=4))
    assert result.tier_tokens.sum(axis=1).tolist() == [0, 0, 8]
    assert result.reloaded_bytes(3) == 8 * DEFAULT_KV_BYTES_PER_TOKEN


def test_reload_is_declined_when_the_disk_is_slower_than_prefill():
    # a page: 2 tokens / 2000 tok/s = 1 ms to recompute; 46 KB at 10 MB/s = 4.6 ms to read
    slow = tiers(l3=4, disk_read_bytes_per_s=10e6)
    assert not slow.reloads(3, 2)
    result = tiered_replay(CYCLE, L1, slow)
    assert result.replay.hit_tokens == 0
    assert result.counters[3].declined_pages == 4
    assert result.time_saved_s() == 0.0


def test_time_saved_is_recompute_minus_reload_per_reloaded_page():
    config = tiers(l2=4, host_bytes_per_s=1e9, prefill_tokens_per_s=1000.0, kv_bytes_per_token=1000)
    result = tiered_replay(CYCLE, L1, config)
    # 4 pages x (2 tokens / 1000 tok/s - 2000 B / 1 GB/s)
    assert result.time_saved_s() == pytest.approx(4 * (2e-3 - 2e-6))


# r0's prompt has two counted pages P1 = [1, 1], P2 = [2, 2]; r1 needs the whole pool of 4 and evicts them
# (one leaf, demoted deepest first: P2, then P1); r2 asks for P1, P2 again.
EVICT_TWO = Trace(
    [
        TraceRequest("r0", [1, 1, 2, 2, 9], []),
        TraceRequest("r1", [5, 5, 6, 6, 7, 7, 9], []),
        TraceRequest("r2", [1, 1, 2, 2, 8], []),
    ]
)


def test_a_one_page_l2_keeps_the_shallow_page_of_an_evicted_leaf():
    # P1 is demoted last, so it pushes P2 out of L2: r2 reloads P1 and recomputes P2. Making room for r2
    # evicts two of r1's pages; P1 is pinned then, so each is dropped on arrival.
    result = tiered_replay(EVICT_TWO, L1, tiers(l2=1))
    assert result.replay.cached_tokens.tolist() == [0, 0, 2]
    assert (result.counters[2].demoted_pages, result.counters[2].dropped_pages) == (4, 3)


def test_a_declined_page_ends_the_walk_below():
    # P2 goes on to a slow L3: r2 reloads P1 from L2, finds P2 on disk and recomputes it
    result = tiered_replay(EVICT_TWO, L1, tiers(l2=1, l3=1, disk_read_bytes_per_s=1e3))
    assert result.replay.cached_tokens.tolist() == [0, 0, 2]
    assert result.counters[3].declined_pages == 1


@st.composite
def tier_traces(draw):
    """A few shared stems with random tails and replies, two tenants: partial sharing under pressure."""
    stems = [draw(st.lists(st.integers(0, 3), min_size=0, max_size=10)) for _ in range(3)]
    requests = []
    for i in range(draw(st.integers(1, 16))):
        stem = stems[draw(st.integers(0, 2))]
        tail = draw(st.lists(st.integers(0, 3), min_size=1, max_size=6))
        output = draw(st.lists(st.integers(0, 3), max_size=4))
        requests.append(TraceRequest(f"r{i}", stem + tail, output, draw(st.sampled_from(["", "b"]))))
    return Trace(requests)


@settings(max_examples=30, deadline=None)
@given(
    tier_traces(),
    st.sampled_from([1, 2, 4]),
    st.integers(3, 12),
    st.integers(0, 8),
    st.integers(0, 8),
    st.sampled_from(["fcfs", "lpm"]),
    st.sampled_from([1, 2]),
)
def test_cumulative_bounds_are_above_every_policy_per_tier(trace, page_size, l1, l2, l3, order, max_batch):
    config = tiers(l2, l3)
    for policy in policy_names():
        replay_config = ReplayConfig(l1, page_size, policy, order, window=4, max_batch=max_batch, check_integrity=True)
        result = tiered_replay(trace, replay_config, config)
        refs = optimal.page_references(trace, result.replay.served_order, page_size)
        bounds = cumulative_bounds(refs, (l1, *config.tier_pages(page_size)))
        served = result.tier_tokens.sum(axis=1).cumsum() // page_size
        assert all(s <= b for s, b in zip(served.tolist(), bounds)), (policy, served, bounds)
        savings = [config.saving_seconds(t, page_size) for t in (1, 2, 3)]
        assert result.time_saved_s() <= time_saved_bound(bounds, savings) + 1e-12


@settings(max_examples=30, deadline=None)
@given(tier_traces(), st.sampled_from([1, 2, 4]), st.integers(21, 30), st.sampled_from(policy_names()))
def test_an_unbounded_l2_serves_what_an_unbounded_pool_would(trace, page_size, l1, policy):
    # Every page ever inserted stays in L1 or (inclusive) in L2, so each request gets the hits it would
    # get from a pool that never evicts. l1 >= 21 pages fits any request of tier_traces (<= 20 tokens).
    tiered = tiered_replay(trace, ReplayConfig(l1, page_size, policy, check_integrity=True), tiers(l2=10_000))
    unbounded = replay(trace, ReplayConfig(10_000, page_size, policy))
    assert tiered.replay.cached_tokens.tolist() == unbounded.cached_tokens.tolist()


def test_cumulative_bounds_repeat_for_an_absent_tier_and_grow_with_capacity():
    refs = optimal.page_references(CYCLE, range(len(CYCLE)), 2)
    # 3 pages: keep a, b, c and bypass d (3 hits, where LRU gets none); 4 pages: all four hit
    assert cumulative_bounds(refs, (3, 0, 1)) == (3, 3, 4)


def test_time_bound_uses_the_envelope_of_savings():
    # savings not ordered (a disk faster than the host): tier 2's pages may be worth tier 3's saving
    assert time_saved_bound((1, 3, 4), (10.0, 1.0, 2.0)) == pytest.approx(1 * 8 + 3 * 0 + 4 * 2)


def test_default_kv_bytes_match_the_model_cost_formula():
    from trellis_jax.ablate import costs
    from trellis_jax.model import cost

    assert DEFAULT_KV_BYTES_PER_TOKEN == cost.kv_bytes_per_token(costs.default_model_config(), "bfloat16")


@pytest.mark.parametrize(
    "text,expected",
    [("512", Capacity(512)), ("2GiB", Capacity(2 << 30, "bytes")), ("1.5 kb", Capacity(1500, "bytes"))],
)
def test_parse_capacity(text, expected):
    assert parse_capacity(text) == expected


@pytest.mark.parametrize("text", ["", "-1", "1.5", "12 pages", "3XB", "GiB"])
def test_parse_capacity_refuses_bad_values(text):
    with pytest.raises(ValueError, match="tier capacity"):
        parse_capacity(text)


def test_byte_capacities_round_down_to_whole_pages():
    config = TierConfig(Capacity(5 * 2 * DEFAULT_KV_BYTES_PER_TOKEN - 1, "bytes"), Capacity(3))
    assert config.tier_pages(2) == (4, 3)


@pytest.mark.parametrize(
    "kw", [dict(host_bytes_per_s=0), dict(disk_read_bytes_per_s=float("inf")), dict(prefill_tokens_per_s=-1.0)]
)
def test_tier_config_refuses_bad_rates(kw):
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        tiers(1, **kw)


def test_shared_namespaces_are_refused():
    trace = Trace([TraceRequest("r0", [1, 2, 3], [], "pub")], shared_namespaces=frozenset({"pub"}))
    with pytest.raises(ValueError, match="shared namespaces"):
        tiered_replay(trace, L1, tiers(l2=1))


def test_partial_pages_are_refused():
    with pytest.raises(ValueError, match="partial_pages"):
        tiered_replay(CYCLE, ReplayConfig(4, 2, partial_pages=True), tiers(l2=1))
