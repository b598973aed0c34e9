"""RadixCache.unsaved_pages (cache/tiers.py): the device pages a checkpoint copies to the store, keyed as
their demotion would be, parents first, those the store holds skipped; the tree is left as it was."""

import pytest

from trellis_jax.cache import RadixCache
from trellis_jax.cache.page_keys import chain_key

PS = 2


def tiered():
    cache = RadixCache(8, PS)
    cache.enable_tiers("host")
    return cache


def test_every_device_page_is_listed_parents_first_with_demotion_keys():
    cache = tiered()
    pages = cache.alloc_pages(2)
    cache.insert([1, 2, 3, 4], pages, "")
    k1 = chain_key(None, [1, 2], "")
    out = cache.unsaved_pages(lambda key: False)
    assert [(d.page_id, d.key, d.parent, d.tokens) for d in out] == [
        (pages[0], k1, None, (1, 2)),
        (pages[1], chain_key(k1, [3, 4], ""), k1, (3, 4)),
    ]
    assert cache.match([1, 2, 3, 4]).num_cached_tokens == 4  # still on the device
    assert cache.take_demotions() == []
    cache.check_integrity()


def test_pages_the_store_holds_are_skipped():
    cache = tiered()
    cache.insert([1, 2, 3, 4], cache.alloc_pages(2), "")
    held = {chain_key(None, [1, 2], "")}
    assert [d.tokens for d in cache.unsaved_pages(held.__contains__)] == [(3, 4)]


def test_demoted_pages_are_not_listed_again():
    cache = tiered()
    cache.insert([1, 2, 3, 4], cache.alloc_pages(2), "")
    cache.evict(1)
    assert [d.tokens for d in cache.unsaved_pages(lambda key: False)] == [(1, 2)]


def test_without_tiers_it_is_refused():
    with pytest.raises(ValueError, match="enable_tiers"):
        RadixCache(8, PS).unsaved_pages(lambda key: False)
