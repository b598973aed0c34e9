"""Eviction policies: registry, the order each built-in evicts in, and the stateful hooks."""

import pytest

from trellis_jax.cache import EvictionPolicy, HeapPolicy, RadixCache, get_policy, policy_names, register_policy
from trellis_jax.cache import policy as policy_module

A, B, C = [1, 1], [2, 2], [3, 3]


def fill(policy, *keys, page_size=2, priorities=None):
    cache = RadixCache(32, page_size, policy=policy)
    for i, key in enumerate(keys):
        cache.insert(key, cache.alloc_pages(len(key) // page_size), priority=(priorities or {}).get(i))
    return cache


def eviction_order(cache, keys):
    order = []
    while cache.num_evictable_pages:
        cache.evict(1)
        order += [k for k in keys if k not in order and cache.peek(k) < len(k)]
    return order


def test_registry_holds_every_builtin_policy():
    assert {"lru", "lfu", "fifo", "mru", "slru", "priority", "cost_aware"} <= set(policy_names())


def test_unknown_policy_names_the_registered_ones():
    with pytest.raises(ValueError, match="registered: .*lru"):
        get_policy("nope")


def test_each_cache_gets_a_fresh_policy_instance():
    assert RadixCache(4, 1).policy is not RadixCache(4, 1).policy


def test_lru_evicts_the_least_recently_used_leaf():
    cache = fill("lru", A, B, C)
    cache.match(A)
    assert eviction_order(cache, [A, B, C]) == [B, C, A]


def test_mru_evicts_the_most_recently_used_leaf():
    cache = fill("mru", A, B, C)
    cache.match(A)
    assert eviction_order(cache, [A, B, C]) == [A, C, B]


def test_fifo_ignores_use():
    cache = fill("fifo", A, B, C)
    cache.match(A)
    assert eviction_order(cache, [A, B, C]) == [A, B, C]


def test_lfu_evicts_the_least_hit_leaf():
    cache = fill("lfu", A, B, C)
    cache.match(A), cache.match(A), cache.match(C)
    assert eviction_order(cache, [A, B, C]) == [B, C, A]


def test_slru_protects_leaves_hit_again_even_if_older():
    cache = fill("slru", A)
    cache.match(A)
    for key in (B, C):
        cache.insert(key, cache.alloc_pages(1))
    assert eviction_order(cache, [A, B, C]) == [B, C, A]


def test_priority_evicts_the_lowest_request_priority():
    cache = fill("priority", A, B, C, priorities={0: 5, 1: 1, 2: 3})
    assert eviction_order(cache, [A, B, C]) == [B, C, A]


def test_cost_aware_evicts_cheap_shallow_pages_before_deep_ones():
    deep = list(range(100, 132))
    cache = fill("cost_aware", deep, page_size=16, priorities=None)
    cache.insert(list(range(16)), cache.alloc_pages(1))  # shallow leaf, inserted last (most recent)
    assert cache.evict(1) == 1
    assert cache.match(list(range(16))).num_cached_tokens == 0
    assert cache.match(deep).num_cached_tokens == 32


def test_cost_aware_ages_out_expensive_leaves():
    cache = RadixCache(64, 1, policy="cost_aware")
    deep = cache.insert(list(range(2000, 2040)), cache.alloc_pages(40)).handle
    for i in range(60):  # a stream of cheap one-page prompts keeps evicting: inflation rises past `deep`
        if not cache.can_allocate(1) or cache.num_free_pages == 0:
            cache.evict(1)
        cache.insert([i], cache.alloc_pages(1))
    assert not deep.alive or deep.num_pages < 40


class RecordingPolicy(HeapPolicy):
    """LRU that records hook calls: shows state can live in hooks, not only in a key."""

    name = "recording"

    def __init__(self):
        super().__init__()
        self.calls = []

    def sort_key(self, node):
        return node.last_access

    def on_insert(self, node):
        self.calls.append(("insert", node.key))

    def on_access(self, node):
        self.calls.append(("access", node.key))
        super().on_access(node)

    def on_split(self, upper, lower):
        self.calls.append(("split", upper.key, lower.key))
        super().on_split(upper, lower)

    def on_evict(self, node, num_pages):
        self.calls.append(("evict", node.key, num_pages))


def test_policy_hooks_are_called_on_insert_access_split_and_evict():
    policy = RecordingPolicy()
    cache = RadixCache(16, 1, policy=policy)
    cache.insert([1, 2, 3], cache.alloc_pages(3))
    cache.match([1, 2, 9])
    cache.evict(1)
    kinds = [call[0] for call in policy.calls]
    assert kinds[0] == "insert" and "split" in kinds and "access" in kinds and kinds[-1] == "evict"
    assert ("split", (1, 2), (3,)) in policy.calls and policy.calls[-1] == ("evict", (3,), 1)


def test_registered_custom_policy_is_usable_by_name(monkeypatch):
    monkeypatch.setattr(policy_module, "_REGISTRY", dict(policy_module._REGISTRY))  # undone after the test
    register_policy("test-recording", RecordingPolicy)
    cache = RadixCache(8, 1, policy="test-recording")
    assert isinstance(cache.policy, RecordingPolicy) and isinstance(cache.policy, EvictionPolicy)
    with pytest.raises(ValueError, match="already registered"):
        register_policy("test-recording", HeapPolicy)


def test_a_policy_instance_in_use_cannot_serve_a_second_cache():
    policy = get_policy("lru")
    cache = RadixCache(8, 1, policy=policy)
    cache.insert([1], cache.alloc_pages(1))
    with pytest.raises(ValueError, match="already in use"):
        RadixCache(8, 1, policy=policy)
