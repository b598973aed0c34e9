"""Hit counts of tiny hand-made traces, computed by hand per policy (see the comments for the work).

`single_page_trace` makes each request touch one tree page; with a pool of 4 pages a miss needs 2
(its page + its private partial page), so the tree is a paging cache of 3 pages that evicts one page
on a miss when full. Hits below are in pages; each page is 2 tokens.
"""

import pytest
from ablate_traces import single_page_trace, trace_of

from trellis_jax.ablate import ReplayConfig, optimal, replay
from trellis_jax.ablate.trace import Trace, TraceRequest

# a a b c d a b e a, cache of 3 pages:
#   lru : d evicts a; a evicts b; b evicts c; e evicts d; hits at 1, 8            -> 2
#   fifo: same evictions (a is also the oldest)                                    -> 2
#   lfu : a has count 2; d evicts b (count 1, older than c); a hits; b evicts c;
#         e evicts d; a hits; hits at 1, 5, 8                                       -> 3
#   slru: a is protected after its hit; otherwise as lfu                           -> 3
#   mru : d evicts c (used last); a, b hit; e evicts b; a hits; hits 1, 5, 6, 8     -> 4
SEQ_FREQ = "aabcdabea"
# a b c a d b, cache of 3: lru evicts b for d (b misses); fifo evicts a for d (b hits)
SEQ_RECENCY = "abcadb"


@pytest.mark.parametrize("policy,hits", [("lru", 2), ("fifo", 2), ("lfu", 3), ("slru", 3), ("mru", 4)])
def test_frequency_trace_hits_per_policy(policy, hits):
    result = replay(
        single_page_trace(SEQ_FREQ), ReplayConfig(num_pages=4, page_size=2, policy=policy, check_integrity=True)
    )
    assert result.hit_tokens == 2 * hits


@pytest.mark.parametrize("policy,hits", [("lru", 1), ("fifo", 2)])
def test_recency_trace_separates_lru_from_fifo(policy, hits):
    result = replay(single_page_trace(SEQ_RECENCY), ReplayConfig(num_pages=4, page_size=2, policy=policy))
    assert result.hit_tokens == 2 * hits


def test_optimal_bound_on_frequency_trace():
    # Relaxed cache of 4 pages: a b c d all fit; a, a, b hit; e is never reused (bypassed); a hits -> 4
    trace = single_page_trace(SEQ_FREQ)
    refs = optimal.page_references(trace, range(len(trace)), 2)
    assert optimal.belady_hits(refs, 4) == 4


def test_evictions_are_counted():
    # lru on SEQ_FREQ evicts one page for each of d, a, b, e
    result = replay(single_page_trace(SEQ_FREQ), ReplayConfig(num_pages=4, page_size=2, policy="lru"))
    assert result.evicted_pages == 4


def test_last_prompt_token_is_always_computed():
    # The same 4-token prompt twice, page size 2: the engine matches prompt[:-1] (3 tokens), one page
    trace = trace_of([1, 2, 3, 4], [1, 2, 3, 4])
    result = replay(trace, ReplayConfig(num_pages=16, page_size=2))
    assert result.cached_tokens.tolist() == [0, 2]


def test_partial_pages_count_the_tokens_a_sibling_page_shares():
    # As above, with the engine's partial-page reuse: token 3 is copied from the cached page [3 4]
    trace = trace_of([1, 2, 3, 4], [1, 2, 3, 4])
    result = replay(trace, ReplayConfig(num_pages=16, page_size=2, partial_pages=True))
    assert result.cached_tokens.tolist() == [0, 3]


def test_next_turn_hits_the_previous_reply():
    # Turn 1: prompt 1..5, reply 6 7 8: KV of 1..7 (the last sampled token is never fed back) -> pages
    # [1 2][3 4][5 6] enter the tree. Turn 2: prompt 1..10, matched on 1..9 -> 3 pages = 6 tokens.
    trace = trace_of([1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], outputs=[[6, 7, 8], [11]])
    result = replay(trace, ReplayConfig(num_pages=16, page_size=2))
    assert result.cached_tokens.tolist() == [0, 6]


def test_namespaces_do_not_share():
    trace = trace_of([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], namespaces=["a", "b"])
    result = replay(trace, ReplayConfig(num_pages=16, page_size=2))
    assert result.hit_tokens == 0


def test_page_size_one_matches_token_by_token():
    trace = trace_of([1, 2, 3, 4, 5], [1, 2, 3, 9, 9])
    result = replay(trace, ReplayConfig(num_pages=16, page_size=1))
    assert result.cached_tokens.tolist() == [0, 3]


def test_batch_members_do_not_see_each_other():
    # Both admitted before either inserts: the twin misses in a batch of 2, hits in batches of 1
    trace = trace_of([1, 2, 3, 4, 5], [1, 2, 3, 4, 5])
    assert replay(trace, ReplayConfig(num_pages=16, page_size=2, max_batch=2)).hit_tokens == 0
    assert replay(trace, ReplayConfig(num_pages=16, page_size=2, max_batch=1)).hit_tokens == 4


def test_lpm_runs_the_cached_request_first():
    # After r0, r1 shares nothing and r2 shares r0's pages: lpm serves r2 before r1
    trace = trace_of([1, 2, 3, 4, 5], [7, 7, 7, 7, 7], [1, 2, 3, 4, 9])
    result = replay(trace, ReplayConfig(num_pages=16, page_size=2, order="lpm", window=4))
    assert result.served_order == [0, 2, 1]


def test_request_larger_than_the_pool_is_rejected():
    trace = trace_of([1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3])
    result = replay(trace, ReplayConfig(num_pages=3, page_size=2))
    assert result.rejected == [0] and result.served_order == [1]


def timed(*arrivals):
    # r0 fills the cache; r1 shares nothing; r2 shares r0's pages
    prompts = [[1, 2, 3, 4, 5], [7, 7, 7, 7, 7], [1, 2, 3, 4, 9]]
    return Trace([TraceRequest(f"r{i}", p, [], "", t) for i, (p, t) in enumerate(zip(prompts, arrivals))])


def test_lpm_cannot_reorder_requests_that_have_not_arrived():
    # r1 and r2 arrive long after each previous request is done: each runs alone, in arrival order
    result = replay(timed(0.0, 100.0, 200.0), ReplayConfig(num_pages=16, page_size=2, order="lpm", window=4))
    assert result.served_order == [0, 1, 2]


def test_lpm_reorders_requests_that_wait_together():
    # r1 and r2 arrive while r0 runs (it takes 5 tokens / 2000 tok/s): both wait, r2 has the longer prefix
    result = replay(timed(0.0, 0.001, 0.002), ReplayConfig(num_pages=16, page_size=2, order="lpm", window=4))
    assert result.served_order == [0, 2, 1]


def test_dfs_runs_requests_sharing_an_uncached_prefix_back_to_back():
    # Nothing is cached yet; r1 and r3 share pages [5 5][6 6]: dfs puts the heavier subtree first
    # (r1, r3: two requests) and serves r3 right after r1, so r3 hits; fcfs serves r2 in between
    trace = trace_of([1, 1, 2, 2, 9], [5, 5, 6, 6, 7], [3, 3, 4, 4, 8], [5, 5, 6, 6, 8])
    dfs = replay(trace, ReplayConfig(num_pages=16, page_size=2, order="dfs", window=4))
    assert dfs.served_order[:2] == [1, 3] and dfs.cached_tokens[3] == 4
