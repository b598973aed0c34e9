"""evict_namespace: a tenant's flush frees its own unlocked pages (and its nested namespaces'), nothing else."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trellis_jax.cache import RadixCache, policy_names

SYSTEM = [9, 9, 9, 9]


def insert(cache, tokens, ns):
    return cache.insert(tokens, cache.alloc_pages(len(tokens) // cache.page_size), ns)


def tree_pages(cache):
    return cache.num_evictable_pages + cache.num_locked_pages


@pytest.mark.parametrize("policy", policy_names())
def test_only_the_named_namespace_loses_its_pages(policy):
    cache = RadixCache(32, 2, policy=policy)
    insert(cache, [1, 2, 3, 4, 5, 6], "tenant-a")
    insert(cache, [1, 2, 3, 4, 7, 8], "tenant-a")  # a branch: the cascade must reach the shared parent
    insert(cache, [1, 2, 3, 4], "tenant-b")
    assert cache.evict_namespace("tenant-a") == 4
    assert cache.match([1, 2, 3, 4, 5, 6], "tenant-a").num_cached_tokens == 0
    assert cache.match([1, 2, 3, 4], "tenant-b").num_cached_tokens == 4
    assert tree_pages(cache) == 2
    cache.check_integrity()


def test_nested_namespaces_go_with_their_parent_but_lookalikes_stay():
    cache = RadixCache(32, 2)
    insert(cache, [1, 2], "t/salt:1")
    insert(cache, [3, 4], "t")
    insert(cache, [5, 6], "tx")  # shares the name's first letter, not a namespace of "t"
    assert cache.evict_namespace("t") == 2
    assert cache.match([5, 6], "tx").num_cached_tokens == 2
    cache.check_integrity()


def test_a_nested_namespace_alone_leaves_its_parent():
    cache = RadixCache(32, 2)
    insert(cache, [1, 2], "t/salt:1")
    insert(cache, [1, 2], "t")
    assert cache.evict_namespace("t/salt:1") == 1
    assert cache.match([1, 2], "t").num_cached_tokens == 2
    cache.check_integrity()


def test_locked_pages_stay_and_unlocked_ones_of_the_same_tenant_go():
    cache = RadixCache(32, 2)
    held = insert(cache, [1, 2, 3, 4], "a")
    cache.lock(held.handle)  # a running request's prefix
    insert(cache, [1, 2, 5, 6], "a")  # its sibling branch, not held
    assert cache.evict_namespace("a") == 1
    assert cache.match([1, 2, 3, 4], "a").page_ids == held.page_ids
    cache.unlock(held.handle)
    cache.check_integrity()


def test_the_shared_trunk_survives_a_tenant_flush():
    cache = RadixCache(32, 2, shared_namespaces=frozenset({"public"}))
    system = insert(cache, SYSTEM, "public")
    insert(cache, SYSTEM + [1, 2, 3, 4], "a")
    assert cache.evict_namespace("a") == 2
    assert cache.match(SYSTEM + [1, 2], "b").page_ids == system.page_ids
    cache.check_integrity()


def test_a_shared_namespace_flushes_the_trunk_once_no_tenant_hangs_off_it():
    cache = RadixCache(32, 2, shared_namespaces=frozenset({"public"}))
    insert(cache, SYSTEM, "public")
    insert(cache, SYSTEM + [1, 2], "a")
    assert cache.evict_namespace("public") == 0  # the trunk is not a leaf while a's branch hangs off it
    assert cache.evict_namespace("a") + cache.evict_namespace("public") == 3
    assert tree_pages(cache) == 0
    cache.check_integrity()


def test_freed_pages_are_counted_as_evicted_and_reusable():
    cache = RadixCache(5, 2)
    insert(cache, [1, 2, 3, 4, 5, 6, 7, 8], "a")
    before = cache.stats.evicted_pages
    assert cache.evict_namespace("a") == 4
    assert cache.stats.evicted_pages == before + 4 and cache.num_free_pages == 4


def test_an_empty_or_disabled_cache_frees_nothing():
    assert RadixCache(8, 2).evict_namespace("a") == 0
    disabled = RadixCache(8, 2, enabled=False)
    disabled.insert([1, 2], disabled.alloc_pages(1), "a")
    assert disabled.evict_namespace("a") == 0


def test_namespace_must_be_a_string():
    with pytest.raises(ValueError, match="namespace"):
        RadixCache(8, 2).evict_namespace(None)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "a/s", "b", "public"]), st.lists(st.integers(0, 1), max_size=8), st.booleans()),
        max_size=12,
    ),
    st.sampled_from(policy_names()),
)
def test_after_a_flush_the_namespace_keeps_only_locked_pages(inserts, policy):
    cache = RadixCache(64, 2, policy=policy, shared_namespaces=frozenset({"public"}))
    others = {}
    for ns, tokens, hold in inserts:
        tokens = tokens[: len(tokens) // 2 * 2]
        r = insert(cache, tokens, ns)
        if hold:
            cache.lock(r.handle)
        if ns in ("b", "public"):
            others[tuple(tokens), ns] = len(tokens)
    cache.evict_namespace("a")
    cache.check_integrity()
    assert cache.num_evictable_pages == _unlocked_pages_outside(cache, "a")
    for (tokens, ns), length in others.items():  # nobody else lost a page
        assert cache.match(list(tokens), ns).num_cached_tokens == length


def _unlocked_pages_outside(cache, namespace):
    from trellis_jax.cache.tree import iter_nodes

    return sum(
        len(n.pages)
        for n in iter_nodes(cache._root)
        if n.lock_ref == 0 and not (n.owner == namespace or str(n.owner).startswith(namespace + "/"))
    )
