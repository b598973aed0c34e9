"""Prefetch planning and placement over a restarted tree (cache/prefetch.py): which demoted pages come back
first, and how pages whose KV has arrived become device pages (free pages only, parents first)."""

from typing import NamedTuple

import pytest

from trellis_jax.cache import RadixCache
from trellis_jax.cache.page_keys import chain_key

PS = 2


class Entry(NamedTuple):
    key: bytes
    parent: bytes | None
    tokens: tuple[int, ...]
    namespace: str


def keys_of(tokens) -> list[bytes]:
    keys, parent = [], None
    for i in range(0, len(tokens), PS):
        parent = chain_key(parent, tokens[i : i + PS], "")
        keys.append(parent)
    return keys


def restarted(paths, num_pages=16) -> RadixCache:
    """A cache as a restart leaves it: every page of `paths` demoted (rebuilt from store entries)."""
    cache = RadixCache(num_pages, PS)
    cache.enable_tiers("disk")
    entries = {}
    for tokens in paths:
        parent = None
        for i, key in enumerate(keys_of(tokens)):
            entries.setdefault(key, Entry(key, parent, tuple(tokens[i * PS : (i + 1) * PS]), ""))
            parent = key
    cache.rebuild_demoted(entries.values())
    return cache


def ranked(*keys: bytes):
    """A rank function: the keys given, least recent first; any other key ranks below them."""
    order = {key: i for i, key in enumerate(keys)}
    return lambda key: order.get(key, -1)


A, B = [1, 2, 3, 4], [5, 6, 7, 8]


def test_the_most_recently_used_branch_comes_first():
    cache = restarted([A, B])
    plan = cache.prefetch_plan(10, ranked(*keys_of(A), *keys_of(B)))
    assert plan.keys == keys_of(B) + keys_of(A)


def test_a_branch_ranks_by_its_best_page_below_a_shared_trunk():
    trunk = [1, 2, 3, 4]
    cache = restarted([trunk + [5, 6], trunk + [7, 8]])
    plan = cache.prefetch_plan(3, ranked(keys_of(trunk + [5, 6])[-1], keys_of(trunk + [7, 8])[-1]))
    assert plan.keys == keys_of(trunk + [7, 8])  # the trunk first, then the better branch, 3 pages in all


def test_the_plan_stops_at_its_budget():
    cache = restarted([A, B])
    assert len(cache.prefetch_plan(3, ranked()).keys) == 3
    assert cache.prefetch_plan(0, ranked()).keys == []


def test_a_negative_budget_is_refused():
    with pytest.raises(ValueError, match="budget"):
        restarted([A]).prefetch_plan(-1, ranked())


def test_a_page_waits_until_the_page_above_it_is_ready():
    cache = restarted([A])
    first, second = keys_of(A)
    plan = cache.prefetch_plan(10, ranked())
    assert cache.place_prefetched(plan, {second}) == ([], [])
    placed, gone = cache.place_prefetched(plan, {first, second})
    assert [key for key, _ in placed] == [first, second] and gone == []
    assert cache.match(A).num_cached_tokens == 4
    cache.check_integrity()


def test_placed_pages_are_evictable_cached_pages():
    cache = restarted([A])
    plan = cache.prefetch_plan(10, ranked())
    cache.place_prefetched(plan, set(keys_of(A)))
    assert cache.num_evictable_pages == 2 and cache.num_locked_pages == 0
    cache.check_integrity()


def test_a_page_a_request_reloaded_first_is_gone_and_the_rest_still_placed():
    cache = restarted([A])
    first, second = keys_of(A)
    plan = cache.prefetch_plan(10, ranked())
    _, run = cache.match_tiers(A)
    cache.reload(run, cache.alloc_pages(1))  # a request reloaded the first page itself
    placed, gone = cache.place_prefetched(plan, {first, second})
    assert gone == [first] and [key for key, _ in placed] == [second]
    assert cache.match(A).num_cached_tokens == 4
    cache.check_integrity()


def test_placement_takes_free_pages_only():
    cache = restarted([A], num_pages=5)  # 4 usable pages
    cache.insert([9, 9, 8, 8, 7, 7], cache.alloc_pages(3))  # 3 evictable pages: 1 free
    plan = cache.prefetch_plan(10, ranked())
    placed, _ = cache.place_prefetched(plan, set(keys_of(A)))
    assert len(placed) == 1 and cache.num_free_pages == 0
    assert cache.match([9, 9, 8, 8, 7, 7]).num_cached_tokens == 6  # nothing evicted for it
    cache.check_integrity()
