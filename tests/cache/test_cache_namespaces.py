"""Namespaces (tenant / cache_salt): isolation, collision attempts, and a shared public prefix."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trellis_jax.cache import RadixCache

SYSTEM = [9, 9, 9, 9]


def insert(cache, tokens, ns):
    return cache.insert(tokens, cache.alloc_pages(len(tokens) // cache.page_size), ns)


def test_other_namespace_never_hits_a_private_prefix():
    cache = RadixCache(16, 2)
    insert(cache, [1, 2, 3, 4], "tenant-a")
    m = cache.match([1, 2, 3, 4], "tenant-b")
    assert m.num_cached_tokens == 0 and m.page_ids == []


def test_same_tokens_in_two_namespaces_are_stored_apart():
    cache = RadixCache(16, 2)
    a = insert(cache, [1, 2, 3, 4], "tenant-a")
    b = insert(cache, [1, 2, 3, 4], "tenant-b")
    assert b.num_present_tokens == 0 and not set(a.page_ids) & set(b.page_ids)
    cache.check_integrity()


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        ("a", "a "),
        ("a", "A"),
        ("", " "),
        ("tenant", "tenant/"),
        ("SHARED", "public"),
        ("1", ""),
        ("[1, 2]", ""),
    ],
)
def test_namespace_collision_attempts_never_hit(writer, reader):
    cache = RadixCache(16, 2, shared_namespaces=frozenset({"public"}))
    insert(cache, [1, 2, 3, 4], writer)
    assert cache.match([1, 2, 3, 4], reader).num_cached_tokens == 0


def test_namespace_must_be_a_string():
    with pytest.raises(ValueError, match="namespace"):
        RadixCache(8, 2).match([1, 2], namespace=7)


def test_tenants_share_the_public_prefix():
    cache = RadixCache(16, 2, shared_namespaces=frozenset({"public"}))
    system = insert(cache, SYSTEM, "public")
    m = cache.match(SYSTEM + [1, 2], "tenant-a")
    assert m.num_cached_tokens == 4 and m.page_ids == system.page_ids


def test_nothing_after_the_shared_prefix_is_shared():
    cache = RadixCache(16, 2, shared_namespaces=frozenset({"public"}))
    insert(cache, SYSTEM, "public")
    a_pages = cache.alloc_pages(3)
    a = cache.insert(SYSTEM + [1, 2], a_pages, "tenant-a")
    assert a.num_present_tokens == 4
    assert cache.match(SYSTEM + [1, 2], "tenant-b").num_cached_tokens == 4
    assert cache.match(SYSTEM + [1, 2], "public").num_cached_tokens == 4
    assert cache.match(SYSTEM + [1, 2], "tenant-a").num_cached_tokens == 6


def test_shared_namespace_does_not_see_tenant_prefixes():
    cache = RadixCache(16, 2, shared_namespaces=frozenset({"public"}))
    insert(cache, [1, 2, 3, 4], "tenant-a")
    assert cache.match([1, 2, 3, 4], "public").num_cached_tokens == 0


def test_all_shared_namespaces_form_one_public_trunk():
    cache = RadixCache(16, 2, shared_namespaces=frozenset({"public", "docs"}))
    first = insert(cache, SYSTEM, "public")
    assert insert(cache, SYSTEM, "docs").page_ids == first.page_ids


def test_private_copy_made_before_the_shared_one_is_still_found():
    cache = RadixCache(16, 2, shared_namespaces=frozenset({"public"}))
    private = insert(cache, SYSTEM + [1, 2], "tenant-a")
    insert(cache, SYSTEM, "public")
    m = cache.match(SYSTEM + [1, 2], "tenant-a")
    assert m.num_cached_tokens == 6 and m.page_ids == private.page_ids
    cache.check_integrity()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "public"]), st.lists(st.integers(0, 1), max_size=8)), max_size=12),
    st.lists(st.integers(0, 1), max_size=8),
)
def test_tenant_b_never_observes_tenant_a_private_pages(inserts, probe):
    cache = RadixCache(64, 2, shared_namespaces=frozenset({"public"}))
    a_private = set()
    for ns, tokens in inserts:
        tokens = tokens[: len(tokens) // 2 * 2]
        r = insert(cache, tokens, ns)
        if ns == "a":
            a_private |= set(r.page_ids[r.num_present_tokens // 2 :])
    m = cache.match(probe, "b")
    assert not set(m.page_ids) & a_private


def test_insert_through_a_private_copy_of_a_shared_prefix_keeps_that_copy():
    cache = RadixCache(16, 2, shared_namespaces=frozenset({"public"}))
    private = insert(cache, SYSTEM, "tenant-a")
    cache.lock(private.handle)  # a running request holds the private copy
    shared = insert(cache, SYSTEM, "public")
    tail = cache.alloc_pages(1)
    r = cache.insert(SYSTEM + [1, 2], private.page_ids + tail, "tenant-a")
    assert r.num_present_tokens == 4 and r.page_ids == shared.page_ids + tail
    assert all(cache.allocator.is_allocated(p) for p in private.page_ids)  # still locked, not freed
    cache.lock(r.handle)
    cache.unlock(private.handle)
    assert cache.evict(2) == 2 and cache.match(SYSTEM + [1, 2], "tenant-a").page_ids == r.page_ids
    cache.check_integrity()
