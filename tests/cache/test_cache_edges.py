"""Named edge cases of RadixCache: empty and short prompts, page multiples, splits, duplicates, misuse."""

import pytest

from trellis_jax.cache import IntegrityError, OutOfPagesError, RadixCache


def cached(cache, tokens, pages=None, ns=""):
    """Insert ``tokens`` (whole pages) with fresh private pages, as a finished request would."""
    pages = pages if pages is not None else cache.alloc_pages(len(tokens) // cache.page_size)
    return cache.insert(tokens, pages, ns)


def test_empty_prompt_matches_nothing_and_root_lock_is_a_no_op():
    cache = RadixCache(8, 2)
    m = cache.match([])
    assert m.num_cached_tokens == 0 and m.page_ids == []
    cache.lock(m.handle)
    cache.unlock(m.handle)
    assert cache.insert([], []).num_present_tokens == 0
    cache.check_integrity()


def test_prompt_shorter_than_a_page_never_hits():
    cache = RadixCache(8, 4)
    cached(cache, [1, 2, 3, 4])
    assert cache.match([1, 2, 3]).num_cached_tokens == 0
    assert cache.stats.miss_tokens == 3


def test_partial_pages_cannot_be_inserted():
    cache = RadixCache(8, 4)
    with pytest.raises(ValueError, match="whole pages"):
        cache.insert([1, 2, 3], cache.alloc_pages(1))


def test_exact_page_multiple_is_fully_cached():
    cache = RadixCache(8, 2)
    r = cached(cache, [1, 2, 3, 4])
    m = cache.match([1, 2, 3, 4])
    assert m.num_cached_tokens == 4 and m.page_ids == r.page_ids and m.handle is r.handle


def test_trailing_partial_page_is_not_matched():
    cache = RadixCache(8, 2)
    r = cached(cache, [1, 2, 3, 4])
    assert cache.match([1, 2, 3, 4, 5]).page_ids == r.page_ids
    assert cache.match([1, 2, 3]).page_ids == r.page_ids[:1]


def test_page_size_one_matches_token_by_token():
    cache = RadixCache(16, 1)
    r = cached(cache, [5, 6, 7, 8])
    m = cache.match([5, 6, 9])
    assert m.num_cached_tokens == 2 and m.page_ids == r.page_ids[:2]


def test_match_ending_mid_node_splits_it():
    cache = RadixCache(16, 2)
    r = cached(cache, [1, 2, 3, 4, 5, 6])
    m = cache.match([1, 2, 3, 4, 9, 9])
    assert m.num_cached_tokens == 4 and m.page_ids == r.page_ids[:2]
    assert m.handle.depth == 4 and r.handle.parent is m.handle
    cache.check_integrity()


def test_split_of_a_locked_node_keeps_its_pages_locked():
    cache = RadixCache(16, 2)
    r = cached(cache, [1, 2, 3, 4, 5, 6])
    cache.lock(r.handle)
    cache.match([1, 2, 7, 7])
    assert cache.num_locked_pages == 3 and cache.evict(3) == 0
    cache.unlock(r.handle)
    assert cache.evict(3) == 3
    cache.check_integrity()


def test_insert_of_an_already_present_prefix_frees_the_callers_copies():
    cache = RadixCache(16, 2)
    first = cached(cache, [1, 2, 3, 4])
    mine = cache.alloc_pages(3)
    again = cache.insert([1, 2, 3, 4, 5, 6], mine)
    assert again.num_present_tokens == 4
    assert again.page_ids == first.page_ids + mine[2:]
    assert cache.num_private_pages == 0 and cache.num_free_pages == 15 - 3
    cache.check_integrity()


def test_concurrent_duplicates_end_with_one_copy():
    cache = RadixCache(16, 2)
    a, b = cache.alloc_pages(2), cache.alloc_pages(2)
    ra = cache.insert([1, 2, 3, 4], a)
    rb = cache.insert([1, 2, 3, 4], b)
    assert ra.page_ids == rb.page_ids == a and rb.handle is ra.handle
    assert cache.stats.resident_pages == 2 and cache.stats.duplicate_pages_freed == 2
    assert not any(cache.allocator.is_allocated(p) for p in b)


def test_eviction_under_lock_pressure_reports_instead_of_failing():
    cache = RadixCache(5, 2)
    r = cached(cache, [1, 2, 3, 4, 5, 6, 7, 8])
    cache.lock(r.handle)
    assert not cache.can_allocate(1)
    assert cache.evict(2) == 0
    with pytest.raises(OutOfPagesError, match=r"0 free, 0 evictable, 4 locked"):
        cache.alloc_pages(1)
    assert cache.num_locked_pages == 4
    cache.check_integrity()


def test_alloc_evicts_unlocked_leaves_only_as_needed():
    cache = RadixCache(6, 2)
    cached(cache, [1, 1, 2, 2])
    keep = cached(cache, [3, 3, 4, 4])
    cache.lock(keep.handle)
    cache.alloc_pages(2)  # 1 free + 1 evicted: the unlocked leaf keeps its first page
    assert cache.num_free_pages == 0 and cache.num_evictable_pages == 1 and cache.num_private_pages == 2
    assert cache.match([1, 1, 2, 2]).num_cached_tokens == 2
    assert cache.match([3, 3, 4, 4]).num_cached_tokens == 4


def test_evict_cascades_to_parents_that_become_leaves():
    cache = RadixCache(16, 1)
    cached(cache, [1, 2])
    cached(cache, [1, 2, 3, 4])
    assert cache.evict(4) == 4
    assert cache.match([1, 2, 3, 4]).num_cached_tokens == 0
    cache.check_integrity()


def test_evict_takes_only_the_tail_of_a_long_leaf():
    cache = RadixCache(16, 2)
    r = cached(cache, [1, 2, 3, 4, 5, 6])
    assert cache.evict(1) == 1
    assert cache.match([1, 2, 3, 4, 5, 6]).page_ids == r.page_ids[:2]


def test_unlock_without_lock_is_an_error():
    cache = RadixCache(8, 2)
    r = cached(cache, [1, 2])
    with pytest.raises(ValueError, match="without a matching lock"):
        cache.unlock(r.handle)


def test_evicted_handle_cannot_be_locked():
    cache = RadixCache(8, 2)
    r = cached(cache, [1, 2])
    cache.evict(1)
    with pytest.raises(ValueError, match="evicted"):
        cache.lock(r.handle)


@pytest.mark.parametrize("bad_pages", [[0], [7], [1, 1], [1, 2, 3]])
def test_insert_with_bad_pages_changes_nothing(bad_pages):
    cache = RadixCache(8, 2)
    cache.alloc_pages(3)
    tokens = [1, 2] * (len(bad_pages) if len(set(bad_pages)) == len(bad_pages) else 1)
    with pytest.raises(ValueError):
        cache.insert(tokens if len(bad_pages) != 3 else [1, 2, 3, 4], bad_pages)
    assert cache.num_private_pages == 3 and cache.stats.resident_pages == 0
    cache.check_integrity()


def test_insert_refuses_a_page_already_owned_by_the_tree():
    cache = RadixCache(8, 2)
    r = cached(cache, [1, 2])
    with pytest.raises(ValueError, match="not a private page"):
        cache.insert([5, 6], r.page_ids)


def test_free_pages_refuses_tree_pages():
    cache = RadixCache(8, 2)
    r = cached(cache, [1, 2])
    with pytest.raises(ValueError, match="not a private page"):
        cache.free_pages(r.page_ids)


def test_check_integrity_detects_a_corrupted_counter():
    cache = RadixCache(8, 2)
    cached(cache, [1, 2])
    cache._evictable += 1
    with pytest.raises(IntegrityError, match="evictable"):
        cache.check_integrity()


def test_simulation_mode_runs_a_huge_pool_without_device_memory():
    cache = RadixCache(1_000_000, 16)
    pages = cache.alloc_pages(50_000)
    cache.insert(list(range(800_000)), pages)
    assert cache.match(list(range(800_000))).num_cached_tokens == 800_000
    assert cache.num_free_pages == 1_000_000 - 1 - 50_000


def test_peek_reports_the_match_length_without_mutating():
    cache = RadixCache(16, 2)
    r = cached(cache, [1, 2, 3, 4, 5, 6])
    before = (r.handle.last_access, r.handle.num_pages, cache.stats)
    assert cache.peek([1, 2, 3, 4, 9, 9]) == 4
    assert (r.handle.last_access, r.handle.num_pages, cache.stats) == before


def test_handle_of_another_cache_is_refused():
    other = RadixCache(8, 2).match([1, 2]).handle
    with pytest.raises(ValueError, match="not a handle of this cache"):
        RadixCache(8, 2).lock(other)


def test_shared_namespaces_must_be_a_set_of_names():
    with pytest.raises(ValueError, match="shared_namespaces"):
        RadixCache(8, 2, shared_namespaces="public")


def test_partial_page_is_the_sibling_sharing_the_most_leading_tokens():
    cache = RadixCache(16, 4)
    cached(cache, [1, 2, 3, 4, 5, 6, 9, 9])
    cached(cache, [1, 2, 3, 4, 5, 6, 7, 9])
    tokens = [1, 2, 3, 4, 5, 6, 7, 8]
    m = cache.match(tokens)
    before = cache.stats
    partial = cache.partial_page(m.handle, tokens)
    assert partial.num_tokens == 3 and partial.page_id == cache.match([1, 2, 3, 4, 5, 6, 7, 9]).page_ids[1]
    assert cache.partial_page(m.handle, [1, 2, 3, 4, 8]) is None  # no sibling starts with 8
    assert cache.partial_page(cache.match([]).handle, [1, 2]).num_tokens == 2  # from the root, few tokens left
    assert before.hit_tokens == cache.stats.hit_tokens - 8  # only the two extra matches counted
    cache.check_integrity()
