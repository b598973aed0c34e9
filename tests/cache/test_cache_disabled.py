"""enabled=False (--disable-radix-cache): nothing is ever cached; callers keep and free their pages."""

from trellis_jax.cache import RadixCache


def test_disabled_cache_never_hits_and_owns_nothing():
    cache = RadixCache(16, 2, enabled=False)
    pages = cache.alloc_pages(2)
    r = cache.insert([1, 2, 3, 4], pages)
    assert (r.num_present_tokens, r.page_ids) == (0, pages)
    assert cache.match([1, 2, 3, 4]).num_cached_tokens == 0
    assert cache.num_private_pages == 2 and cache.stats.resident_pages == 0
    cache.free_pages(pages)
    assert cache.num_free_pages == 15
    cache.check_integrity()


def test_disabled_cache_still_refuses_pages_it_did_not_hand_out():
    cache = RadixCache(16, 2, enabled=False)
    try:
        cache.insert([1, 2], [5])
    except ValueError:
        return
    raise AssertionError("insert accepted an unallocated page")
