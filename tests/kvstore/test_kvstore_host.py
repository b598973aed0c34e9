"""HostPageStore: round trips, the slab's capacity, LRU eviction order and its on_evict hook."""

import numpy as np
import pytest
from kv_pages import BF16, SHAPE, chain, page_for

from trellis_jax.kvstore import HostPageStore

PAGE_BYTES = int(np.prod(SHAPE)) * 4


def filled(capacity_pages, entries, **kwargs):
    store = HostPageStore(capacity_pages * PAGE_BYTES, **kwargs)
    for entry in entries:
        assert store.put(entry, page_for(entry))
    return store


@pytest.mark.parametrize("dtype", [np.float32, BF16], ids=["float32", "bfloat16"])
def test_a_page_comes_back_bit_identical_in_its_dtype(dtype):
    entry = chain(1)[0]
    store = HostPageStore(1 << 20)
    store.put(entry, page_for(entry, dtype))
    got = store.get(entry.key)
    assert got.dtype == np.dtype(dtype)
    assert got.tobytes() == page_for(entry, dtype).tobytes()


def test_get_returns_a_copy_that_the_caller_may_change():
    entry = chain(1)[0]
    store = filled(2, [entry])
    store.get(entry.key)[...] = 0
    np.testing.assert_array_equal(store.get(entry.key), page_for(entry))


def test_the_slab_holds_as_many_pages_as_the_capacity_allows():
    store = filled(3, chain(5))
    assert store.stats()["slots"] == 3
    assert len(store) == 3
    assert store.stats()["bytes"] == 3 * PAGE_BYTES


def test_eviction_takes_the_least_recently_used_page():
    a, b, c, d = chain(4)
    store = filled(3, [a, b, c])
    store.get(a.key)  # b is now the least recently used
    store.put(d, page_for(d))
    assert b.key not in store
    assert [a.key in store, c.key in store, d.key in store] == [True, True, True]


def test_on_evict_sees_the_evicted_page_before_its_slot_is_reused():
    seen = []
    a, b, c = chain(3)
    store = filled(2, [a, b], on_evict=lambda entry, page: seen.append((entry, page.copy())))
    store.put(c, page_for(c))
    assert [entry for entry, _ in seen] == [a]
    np.testing.assert_array_equal(seen[0][1], page_for(a))
    assert store.stats()["evicted"] == 1


def test_discard_frees_the_slot_without_calling_on_evict():
    seen = []
    a, b, c = chain(3)
    store = filled(2, [a, b], on_evict=lambda entry, page: seen.append(entry))
    store.discard(a.key)
    store.put(c, page_for(c))
    assert seen == []
    assert b.key in store and c.key in store


def test_a_page_larger_than_the_capacity_is_refused():
    entry = chain(1)[0]
    store = HostPageStore(PAGE_BYTES - 1)
    assert store.put(entry, page_for(entry)) is False
    assert entry.key not in store


def test_a_page_of_another_shape_is_a_value_error():
    a, b = chain(2)
    store = filled(4, [a])
    with pytest.raises(ValueError, match="differs from the store's pages"):
        store.put(b, page_for(b, shape=(2, 2, 2, 8, 8)))


def test_putting_a_held_key_again_keeps_the_first_page():
    entry = chain(1)[0]
    store = filled(2, [entry])
    assert store.put(entry, np.zeros(SHAPE, np.float32))
    np.testing.assert_array_equal(store.get(entry.key), page_for(entry))


def test_stats_count_hits_misses_and_bytes():
    a, b = chain(2)
    store = filled(2, [a])
    store.get(a.key)
    store.get(b.key)
    stats = store.stats()
    assert (stats["hits"], stats["misses"]) == (1, 1)
    assert (stats["bytes_read"], stats["bytes_written"]) == (PAGE_BYTES, PAGE_BYTES)


def test_entries_list_parents_before_children_whatever_the_access_order():
    pages = chain(4)
    store = filled(4, reversed(pages))
    assert [e.key for e in store.entries()] == [e.key for e in pages]


def test_a_closed_store_refuses_puts_and_holds_nothing():
    entry = chain(1)[0]
    store = filled(2, [entry])
    store.close()
    assert store.put(entry, page_for(entry)) is False
    assert store.get(entry.key) is None


def test_a_negative_capacity_is_a_value_error():
    with pytest.raises(ValueError, match="capacity_bytes"):
        HostPageStore(-1)


def test_a_page_that_is_not_a_numeric_array_is_a_value_error():
    entry = chain(1)[0]
    with pytest.raises(ValueError, match="numeric numpy array"):
        HostPageStore(PAGE_BYTES).put(entry, page_for(entry).tolist())
