"""The radix cache's lower tiers (cache/tiers.py): eviction demotes, a match reports what it could reload,
reload and insert promote, policies and the store's contents prune, a restart rebuilds demoted paths."""

import random

import pytest
from cache_oracle import Driver
from cache_oracle import _node_prefix as node_prefix
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from trellis_jax.cache import SHARED, RadixCache, policy_names
from trellis_jax.cache.page_keys import chain_key
from trellis_jax.cache.policies import LRUPolicy
from trellis_jax.cache.tree import iter_nodes
from trellis_jax.kvstore.api import PageEntry
from trellis_jax.kvstore.api import chain_key as store_chain_key

PS = 2


def cached(cache, tokens, ns=""):
    pages = cache.alloc_pages(len(tokens) // PS)
    return cache.insert(tokens, pages, ns)


def tiered(num_pages=8, **options):
    cache = RadixCache(num_pages, PS, **options)
    cache.enable_tiers("host")
    return cache


def test_page_keys_are_the_store_contracts_keys():
    first = chain_key(None, [1, 2], "t")
    assert first == store_chain_key(None, [1, 2], "t")
    assert chain_key(first, [3, 70000], "") == store_chain_key(first, [3, 70000], "")


def test_eviction_demotes_and_keeps_the_node():
    cache = tiered()
    r = cached(cache, [1, 2, 3, 4])
    assert cache.evict(2) == 2
    m, run = cache.match_tiers([1, 2, 3, 4, 5])
    assert m.num_cached_tokens == 0 and run.num_pages == 2 and run.tiers == ("host", "host")
    k1 = chain_key(None, [1, 2], "")
    assert run.keys == (k1, chain_key(k1, [3, 4], ""))
    out = cache.take_demotions()
    assert [(d.page_id, d.key, d.parent, d.tokens) for d in out] == [
        (r.page_ids[0], k1, None, (1, 2)),
        (r.page_ids[1], run.keys[1], k1, (3, 4)),
    ]
    assert cache.num_free_pages == 7 and cache.tier_stats.demoted_pages == 2
    cache.check_integrity()


def test_without_tiers_eviction_drops():
    cache = RadixCache(8, PS)
    cached(cache, [1, 2, 3, 4])
    cache.evict(2)
    assert cache.match_tiers([1, 2, 3, 4])[1] is None
    assert cache.take_demotions() == []


def test_partial_eviction_demotes_only_the_tail():
    cache = tiered()
    cached(cache, [1, 2, 3, 4, 5, 6])
    cache.evict(1)
    m, run = cache.match_tiers([1, 2, 3, 4, 5, 6, 7])
    assert m.num_cached_tokens == 4 and run.num_pages == 1
    cache.check_integrity()


def test_reload_promotes_the_pages_back():
    cache = tiered()
    cached(cache, [1, 2, 3, 4])
    cache.evict(2)
    cache.take_demotions()
    m, run = cache.match_tiers([1, 2, 3, 4, 9])
    cache.lock(m.handle)
    pages = cache.alloc_pages(2)
    end = cache.reload(run, pages)
    assert end.depth == 4
    assert cache.match([1, 2, 3, 4, 9]).page_ids == pages
    assert cache.tier_stats.demoted_pages == 0 and cache.tier_stats.promotions == 2
    cache.check_integrity()


def test_reload_of_a_prefix_drops_the_lost_rest():
    cache = tiered()
    cached(cache, [1, 2, 3, 4, 5, 6])
    cache.evict(3)
    m, run = cache.match_tiers([1, 2, 3, 4, 5, 6])
    cache.reload(run, cache.alloc_pages(1), drop_rest=True)
    m2, run2 = cache.match_tiers([1, 2, 3, 4, 5, 6])
    assert m2.num_cached_tokens == 2 and run2 is None
    assert cache.tier_stats.dropped == 2
    cache.check_integrity()


def test_a_stale_run_is_refused():
    cache = tiered()
    cached(cache, [1, 2])
    cache.evict(1)
    _, run = cache.match_tiers([1, 2])
    cache.flush_all()
    try:
        cache.reload(run, cache.alloc_pages(1))
    except ValueError as error:
        assert "stale" in str(error) or "dropped" in str(error)
    else:
        raise AssertionError("reload of a flushed run was accepted")


def test_insert_over_demoted_pages_promotes_them_with_the_callers_pages():
    cache = tiered()
    cached(cache, [1, 2, 3, 4])
    cache.evict(2)
    pages = cache.alloc_pages(3)
    r = cache.insert([1, 2, 3, 4, 5, 6], pages)
    assert r.page_ids == pages and cache.tier_stats.demoted_pages == 0
    assert cache.match([1, 2, 3, 4, 5, 6]).page_ids == pages
    cache.check_integrity()


def test_a_demoted_child_does_not_keep_its_parent_from_eviction():
    cache = tiered(num_pages=4)
    cached(cache, [1, 2, 3, 4])
    cache.evict(1)  # [3, 4] demoted; [1, 2] is a device leaf again
    assert cache.num_evictable_pages == 1
    cache.alloc_pages(3)
    assert cache.tier_stats.demoted_pages == 2
    cache.check_integrity()


class DropEverything(LRUPolicy):
    name = "drop-everything"

    def should_demote(self, node):
        return False


def test_a_policy_may_drop_instead_of_demoting():
    cache = tiered(policy=DropEverything())
    cached(cache, [1, 2, 3, 4])
    cache.evict(2)
    assert cache.match_tiers([1, 2, 3, 4])[1] is None and cache.take_demotions() == []


def test_tail_pages_with_padding_are_not_demoted():
    cache = tiered()
    cached(cache, [1, -1])
    cache.evict(1)
    assert cache.tier_stats.demoted_pages == 0 and cache.take_demotions() == []


def test_pages_reloaded_this_step_are_dropped_not_demoted():
    cache = tiered(num_pages=4)
    cached(cache, [1, 2])
    cache.evict(1)
    cache.take_demotions()
    m, run = cache.match_tiers([1, 2, 3])
    cache.reload(run, cache.alloc_pages(1))
    cache.evict(1)  # its KV is only written by the coming step: nothing to copy
    assert cache.take_demotions() == [] and cache.tier_stats.demoted_pages == 0
    cache.check_integrity()


def test_prune_drops_what_the_store_no_longer_holds():
    cache = tiered()
    cached(cache, [1, 2, 3, 4])
    cached(cache, [7, 8])
    cache.evict(3)
    out = {d.key: d for d in cache.take_demotions()}
    lost = chain_key(None, [7, 8], "")
    assert cache.prune_demoted(lambda key: key != lost) == 1
    assert cache.match_tiers([7, 8])[1] is None and cache.match_tiers([1, 2, 3, 4])[1].num_pages == 2
    assert len(out) == 3
    cache.check_integrity()


def test_flush_drops_demoted_pages():
    cache = tiered()
    cached(cache, [1, 2, 3, 4])
    cache.evict(2)
    cache.flush_all()
    assert cache.match_tiers([1, 2, 3, 4])[1] is None and cache.tier_stats.demoted_pages == 0


def test_a_restart_rebuilds_demoted_paths_from_store_entries():
    before = tiered(shared_namespaces=frozenset({"sys"}))
    cached(before, [1, 2, 3, 4, 5, 6], "sys")
    cached(before, [1, 2, 9, 9], "sys")
    cached(before, [1, 2, 3, 4, 8, 8], "t")
    before.evict(before.num_evictable_pages)
    entries = [PageEntry(d.key, d.parent, d.tokens, d.namespace) for d in before.take_demotions()]
    entries = _parents_first(entries)  # eviction order is leaves first
    after = tiered(shared_namespaces=frozenset({"sys"}))
    assert after.rebuild_demoted(entries) == len(entries) == 5
    for tokens, ns, pages in (([1, 2, 3, 4, 5, 6], "sys", 3), ([1, 2, 9, 9], "", 2), ([1, 2, 3, 4, 8, 8], "t", 3)):
        m, run = after.match_tiers(tokens, ns)
        assert m.num_cached_tokens == 0 and run.num_pages == pages
    after.check_integrity()


def test_rebuild_skips_entries_whose_key_does_not_chain():
    cache = tiered()
    forged = PageEntry(chain_key(None, [5, 5], ""), None, (1, 2), "")
    assert cache.rebuild_demoted([forged]) == 0


def _parents_first(entries):
    """The store contract's order (PageStore.entries): parents before children."""
    known, out, rest = {None}, [], list(entries)
    while rest:
        ready = [e for e in rest if e.parent in known]
        out += ready
        known |= {e.key for e in ready}
        rest = [e for e in rest if e not in ready]
    return out


NAMESPACES = ["", "tenant-a", "public"]
TOKENS = st.lists(st.integers(0, 2), min_size=0, max_size=10)


class TieredCacheMachine(RuleBasedStateMachine):
    """The oracle machine of test_cache_stateful.py with tiers on, plus reloads, drains and prunes."""

    @initialize(
        page_size=st.sampled_from([1, 2, 3]),
        num_pages=st.integers(3, 16),
        policy=st.sampled_from(policy_names()),
        shared=st.booleans(),
    )
    def setup(self, page_size, num_pages, policy, shared):
        self.driver = Driver(num_pages, page_size, policy, frozenset({"public"}) if shared else frozenset(), tiers=True)

    @rule(ns=st.sampled_from(NAMESPACES), tokens=TOKENS)
    def start_request(self, ns, tokens):
        self.driver.start(ns, tokens)

    @precondition(lambda self: self.driver.requests)
    @rule(index=st.integers(0, 50))
    def commit_request(self, index):
        self.driver.commit(index)

    @precondition(lambda self: self.driver.requests)
    @rule(index=st.integers(0, 50))
    def finish_request(self, index):
        self.driver.finish(index)

    @rule(n=st.integers(0, 6))
    def evict(self, n):
        self.driver.evict(n)

    @rule(ns=st.sampled_from(NAMESPACES), tokens=TOKENS, count=st.integers(0, 4), drop_rest=st.booleans())
    def reload(self, ns, tokens, count, drop_rest):
        self.driver.reload(ns, tokens, count, drop_rest)

    @rule(index=st.integers(0, 50), count=st.integers(0, 4), drop_rest=st.booleans(), extra=TOKENS)
    def reload_demoted(self, index, count, drop_rest, extra):
        """Reload (part of) the path of a demoted node, and maybe start a request on it (insert promotes)."""
        found = self._demoted_path(index)
        if found is not None:
            self.driver.reload(found[0], found[1] + extra, count, drop_rest)

    @rule(index=st.integers(0, 50), extra=TOKENS)
    def start_on_demoted(self, index, extra):
        found = self._demoted_path(index)
        if found is not None:
            self.driver.start(found[0], found[1] + extra)

    def _demoted_path(self, index):
        demoted = [n for n in iter_nodes(self.driver.cache._root) if n.tier is not None]
        if not demoted:
            return None
        node = demoted[index % len(demoted)]
        return ("public" if node.owner is SHARED else node.owner), list(node_prefix(node))

    @rule()
    def drain(self):
        self.driver.drain()

    @rule(seed=st.integers(0, 3))
    def prune(self, seed):
        self.driver.cache.prune_demoted(lambda key: (key[0] + seed) % 4 != 0)

    @invariant()
    def consistent(self):
        if hasattr(self, "driver"):
            self.driver.check()


TieredCacheMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_tiered_cache_matches_oracle = TieredCacheMachine.TestCase


@pytest.mark.parametrize(("page_size", "policy", "seed"), [(2, "lru", 1), (1, "lfu", 2), (3, "cost_aware", 3)])
def test_a_long_tiered_run_matches_the_oracle(page_size, policy, seed):
    """A seeded run of 1,500 operations (realistic shared heads, so demoted paths come back), integrity and
    the oracle checked after each; it must demote, reload, promote on insert and prune along the way."""
    rng = random.Random(seed)
    driver = Driver(24, page_size, policy, frozenset({"public"}), tiers=True)
    heads = [[], [7, 7, 1, 2, 3, 4], [7, 7, 1, 2, 9, 9, 9, 9], [5] * 6]
    namespaces = ["", "tenant-a", "public"]
    for _ in range(1500):
        op, ns = rng.random(), rng.choice(namespaces)
        tokens = rng.choice(heads) + [rng.randrange(3) for _ in range(rng.randrange(8))]
        if op < 0.3 or not driver.requests:
            driver.start(ns, tokens)
        elif op < 0.5:
            driver.commit(rng.randrange(1000))
        elif op < 0.65:
            driver.finish(rng.randrange(1000))
        elif op < 0.8:
            driver.reload(ns, tokens, rng.randrange(5), rng.random() < 0.2)
        elif op < 0.9:
            driver.evict(rng.randrange(6))
        elif op < 0.97:
            driver.drain()
        else:
            driver.cache.prune_demoted(lambda key: key[0] % 8 != 0)
        driver.check()
    s = driver.cache.tier_stats
    assert s.demotions > 0 and s.promotions > 0 and s.dropped > 0
