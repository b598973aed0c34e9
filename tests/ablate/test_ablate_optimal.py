"""The offline bound: exact for its relaxation (exhaustive search), and above every policy."""

import itertools

import numpy as np
from ablate_traces import single_page_trace
from hypothesis import given, settings
from hypothesis import strategies as st

from trellis_jax.ablate import ReplayConfig, optimal, replay
from trellis_jax.ablate.clairvoyant import clairvoyant_replay
from trellis_jax.ablate.policies import arc  # noqa: F401  (registers "arc")
from trellis_jax.ablate.trace import Trace, TraceRequest
from trellis_jax.cache import policy_names

POLICIES = [p for p in policy_names()]


def exhaustive_optimum(refs: optimal.PageReferences, capacity: int) -> int:
    """Best hits over every load/evict/bypass choice (sets of cached nodes), by dynamic programming."""
    best = {frozenset(): 0}
    for node, counted in zip(refs.nodes.tolist(), refs.counted.tolist()):
        nxt = {}
        for cached, hits in best.items():
            gain = hits + (counted and node in cached)
            pool = cached | {node}
            for size in range(min(capacity, len(pool)) + 1):
                for keep in itertools.combinations(sorted(pool), size):
                    key = frozenset(keep)
                    if nxt.get(key, -1) < gain:
                        nxt[key] = gain
        best = nxt
    return max(best.values())


@st.composite
def reference_sequences(draw):
    n = draw(st.integers(1, 12))
    nodes = np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), np.int64)
    counted = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool)
    return optimal.PageReferences(nodes, counted, 1)


@settings(max_examples=300, deadline=None)
@given(reference_sequences(), st.integers(0, 3))
def test_belady_with_bypass_is_exact_for_the_relaxation(refs, capacity):
    assert optimal.belady_hits(refs, capacity) == exhaustive_optimum(refs, capacity)


@settings(max_examples=100, deadline=None)
@given(reference_sequences())
def test_next_gainful_reference_matches_a_scan(refs):
    nodes, counted = refs.nodes.tolist(), refs.counted.tolist()
    following = [next((j for j in range(i + 1, len(nodes)) if nodes[j] == nodes[i]), None) for i in range(len(nodes))]
    expected = [j if j is not None and counted[j] else optimal.NEVER for j in following]
    assert optimal.next_gainful_reference(refs).tolist() == expected


def test_a_page_dropped_before_an_uncounted_reference_is_reloaded_there():
    # Hypothesis found this: with 2 pages, n1 is evicted for n2 at position 5 and reloaded free at 7.
    refs = optimal.PageReferences(
        np.array([0, 0, 0, 0, 1, 2, 0, 1, 1, 2, 0]), np.array([0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 0], bool), 1
    )
    assert optimal.belady_hits(refs, 2) == exhaustive_optimum(refs, 2) == 3


@st.composite
def small_traces(draw):
    """Requests built from a few shared stems plus random tails: plenty of partial prefix sharing."""
    stems = [draw(st.lists(st.integers(0, 3), min_size=0, max_size=8)) for _ in range(3)]
    requests = []
    for i in range(draw(st.integers(1, 14))):
        stem = stems[draw(st.integers(0, 2))]
        tail = draw(st.lists(st.integers(0, 3), min_size=1, max_size=6))
        output = draw(st.lists(st.integers(0, 3), max_size=4))
        namespace = draw(st.sampled_from(["", "", "b"]))
        requests.append(TraceRequest(f"r{i}", stem + tail, output, namespace))
    return Trace(requests)


@settings(max_examples=40, deadline=None)
@given(
    small_traces(),
    st.sampled_from([1, 2, 4]),
    st.integers(3, 24),
    st.sampled_from(["fcfs", "lpm", "dfs"]),
    st.sampled_from([1, 2]),
)
def test_optimal_bound_is_above_every_policy(trace, page_size, capacity, order, max_batch):
    for policy in POLICIES:
        result = replay(
            trace, ReplayConfig(capacity, page_size, policy, order, window=4, max_batch=max_batch, check_integrity=True)
        )
        refs = optimal.page_references(trace, result.served_order, page_size)
        bound = optimal.belady_hits(refs, capacity) * page_size
        assert result.hit_tokens <= bound, (policy, result.hit_tokens, bound)
        assert bound <= optimal.infinite_capacity_hits(refs) * page_size <= optimal.ceiling_hits(refs) * page_size


def test_shared_namespaces_keep_the_bound_valid():
    # Tenant b hits the shared trunk written by namespace "pub": the bound must count that hit too
    trace = Trace(
        [TraceRequest("r0", [1, 2, 3, 4, 5], [], "pub"), TraceRequest("r1", [1, 2, 3, 4, 9], [], "b")],
        shared_namespaces=frozenset({"pub"}),
    )
    result = replay(trace, ReplayConfig(16, 2))
    refs = optimal.page_references(trace, result.served_order, 2)
    assert result.hit_tokens == 4 and optimal.belady_hits(refs, 16) * 2 >= 4


def test_clairvoyant_tree_policy_reaches_belady_on_a_paging_trace():
    # "aabcdabea" in a 3-page tree: d evicts c (never used again); a, b hit; e evicts b or d; a hits -> 4
    assert clairvoyant_replay(single_page_trace("aabcdabea"), 4, 2).hit_tokens == 2 * 4


@settings(max_examples=40, deadline=None)
@given(small_traces(), st.sampled_from([1, 2, 4]), st.integers(3, 24))
def test_clairvoyant_tree_policy_is_feasible_hence_below_the_bound(trace, page_size, capacity):
    result = clairvoyant_replay(trace, capacity, page_size, check_integrity=True)
    refs = optimal.page_references(trace, result.served_order, page_size)
    assert result.hit_tokens <= optimal.belady_hits(refs, capacity) * page_size
