"""The PageStore protocol (api.py), one suite run against every store: the tiers may hold any of them."""

import numpy as np
import pytest
from kv_pages import FINGERPRINT, chain, page_for

from trellis_jax.kvstore import DiskPageStore, HostPageStore, PageStore, TieredPageStore

MB = 1 << 20
PROTOCOL_STATS = {"pages", "bytes", "hits", "misses", "bytes_read", "bytes_written", "evicted", "refused_corrupt"}
STORES = {
    "host": lambda d: HostPageStore(16 * MB),
    "disk": lambda d: DiskPageStore(d, FINGERPRINT, 16 * MB),
    "tiered": lambda d: TieredPageStore(HostPageStore(16 * MB), DiskPageStore(d, FINGERPRINT, 16 * MB)),
    "tiered-host-only": lambda d: TieredPageStore(HostPageStore(16 * MB), None),
}


@pytest.fixture(params=list(STORES))
def store(request, tmp_path) -> PageStore:
    made = STORES[request.param](tmp_path)
    yield made
    made.close()


def test_put_then_get_returns_the_page(store):
    entry = chain(1)[0]
    assert store.put(entry, page_for(entry))
    np.testing.assert_array_equal(store.get(entry.key), page_for(entry))
    assert entry.key in store


def test_entry_returns_what_was_kept_beside_the_page(store):
    entry = chain(2)[1]
    store.put(entry, page_for(entry))
    assert store.entry(entry.key) == entry
    assert store.entry(chain(1, first_token=9)[0].key) is None


def test_a_held_key_is_left_as_is(store):
    entry = chain(1)[0]
    store.put(entry, page_for(entry))
    assert store.put(entry, np.zeros_like(page_for(entry)))
    np.testing.assert_array_equal(store.get(entry.key), page_for(entry))


def test_discard_forgets_the_key(store):
    entry = chain(1)[0]
    store.put(entry, page_for(entry))
    store.discard(entry.key)
    store.discard(entry.key)
    assert entry.key not in store and store.get(entry.key) is None


def test_entries_are_parents_first(store):
    pages = chain(4)
    for entry in reversed(pages):
        store.put(entry, page_for(entry))
    store.flush()
    assert list(store.entries()) == pages


def test_stats_hold_the_protocols_counters(store):
    entry = chain(1)[0]
    store.put(entry, page_for(entry))
    store.get(entry.key)
    store.get(chain(1, first_token=9)[0].key)
    stats = store.stats()
    assert PROTOCOL_STATS <= stats.keys()
    assert (stats["hits"], stats["misses"]) == (1, 1)


def test_a_closed_store_refuses_puts(store):
    store.close()
    entry = chain(1)[0]
    assert store.put(entry, page_for(entry)) is False
