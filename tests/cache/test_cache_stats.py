"""CacheStats: hit/miss tokens, page counters, gauges, dedup ratio, reset."""

from trellis_jax.cache import RadixCache


def test_hits_and_misses_count_tokens():
    cache = RadixCache(16, 2)
    cache.insert([1, 2, 3, 4], cache.alloc_pages(2))
    cache.match([1, 2, 3, 4, 5])
    cache.match([7, 7])
    stats = cache.stats
    assert (stats.hit_tokens, stats.miss_tokens, stats.match_calls) == (4, 3, 2)
    assert abs(stats.hit_rate - 4 / 7) < 1e-12


def test_page_counters_and_gauges():
    cache = RadixCache(16, 2)
    r = cache.insert([1, 2, 3, 4], cache.alloc_pages(2))
    cache.lock(cache.match([1, 2]).handle)
    cache.alloc_pages(1)
    cache.evict(5)
    stats = cache.stats
    assert (stats.inserted_pages, stats.evicted_pages) == (2, 1)
    assert (stats.resident_pages, stats.locked_pages, stats.evictable_pages) == (1, 1, 0)
    assert (stats.private_pages, stats.free_pages) == (1, 13)
    assert r.page_ids[0] in cache.match([1, 2]).page_ids


def test_dedup_ratio_counts_shared_locked_prefixes():
    cache = RadixCache(16, 2)
    cache.insert([1, 2, 3, 4], cache.alloc_pages(2))
    assert cache.stats.dedup_ratio == 1.0
    for _ in range(3):
        cache.lock(cache.match([1, 2, 3, 4]).handle)
    assert cache.stats.dedup_ratio == 3.0


def test_reset_zeroes_counters_but_keeps_gauges():
    cache = RadixCache(16, 2)
    cache.insert([1, 2], cache.alloc_pages(1))
    cache.match([1, 2])
    cache.reset_stats()
    stats = cache.stats
    assert (stats.hit_tokens, stats.inserted_pages, stats.match_calls) == (0, 0, 0)
    assert stats.resident_pages == 1
