"""TieredPageStore: host in front of disk, write-back off the caller's thread, promotion, a clean stop."""

import threading

import numpy as np
import pytest
from kv_pages import FINGERPRINT, SHAPE, chain, page_for

from trellis_jax.kvstore import DiskPageStore, HostPageStore, TieredPageStore

PAGE_BYTES = int(np.prod(SHAPE)) * 4
MB = 1 << 20


def tiered(directory, host_pages=2, **kwargs):
    return TieredPageStore(
        HostPageStore(host_pages * PAGE_BYTES), DiskPageStore(directory, FINGERPRINT, 64 * MB), **kwargs
    )


def put_all(store, entries):
    for entry in entries:
        assert store.put(entry, page_for(entry))


class GatedDisk(DiskPageStore):
    """A disk whose puts wait until the test opens the gate: shows who waits on disk."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()

    def put(self, entry, page):
        assert self.gate.wait(10)
        return super().put(entry, page)


def test_pages_evicted_from_host_reach_disk_after_flush(tmp_path):
    pages = chain(5)
    store = tiered(tmp_path)
    put_all(store, pages)
    store.flush()
    assert [e.key in store.disk for e in pages] == [True, True, True, False, False]
    assert [e.key in store.host for e in pages] == [False, False, False, True, True]
    assert store.stats()["writeback_written"] == 3


def test_a_page_found_on_disk_is_served_and_promoted_into_host(tmp_path):
    pages = chain(4)
    store = tiered(tmp_path)
    put_all(store, pages)
    store.flush()
    np.testing.assert_array_equal(store.get(pages[0].key), page_for(pages[0]))
    assert pages[0].key in store.host
    stats = store.stats()
    assert (stats["disk_hits"], stats["hits"], stats["misses"]) == (1, 1, 0)


def test_put_does_not_wait_for_the_disk_and_pending_pages_are_served(tmp_path):
    a, b, c = chain(3)
    disk = GatedDisk(tmp_path, FINGERPRINT, 64 * MB)
    store = TieredPageStore(HostPageStore(2 * PAGE_BYTES), disk)
    put_all(store, [a, b, c])  # evicts a while the disk is shut: returns anyway
    assert a.key in store and a.key not in disk
    np.testing.assert_array_equal(store.get(a.key), page_for(a))
    assert store.stats()["pending_hits"] == 1
    disk.gate.set()
    store.flush()
    assert a.key in disk


def test_demotions_past_the_pending_bound_are_dropped_and_counted(tmp_path):
    disk = GatedDisk(tmp_path, FINGERPRINT, 64 * MB)
    store = TieredPageStore(HostPageStore(PAGE_BYTES), disk, max_pending_bytes=PAGE_BYTES)
    pages = chain(4)
    put_all(store, pages)  # evicts 3: the first fills the queue (its write waits at the gate), 2 are dropped
    stats = store.stats()
    assert (stats["writeback_queued"], stats["writeback_dropped"], stats["pending_bytes"]) == (1, 2, PAGE_BYTES)
    assert [e.key in store for e in pages] == [True, False, False, True]
    disk.gate.set()
    store.flush()


def test_write_through_puts_every_page_on_disk(tmp_path):
    pages = chain(2)
    store = tiered(tmp_path, host_pages=4, write_through=True)
    put_all(store, pages)
    store.flush()
    assert all(e.key in store.disk and e.key in store.host for e in pages)


def test_close_keeps_every_host_page_for_the_next_process(tmp_path):
    pages = chain(3)
    store = tiered(tmp_path, host_pages=4)
    put_all(store, pages)
    store.close()
    reopened = tiered(tmp_path)
    assert [e.key for e in reopened.entries()] == [e.key for e in pages]
    np.testing.assert_array_equal(reopened.get(pages[2].key), page_for(pages[2]))


def test_entries_cover_both_tiers_parents_first(tmp_path):
    pages = chain(5)
    store = tiered(tmp_path)
    put_all(store, reversed(pages))
    store.flush()
    assert [e.key for e in store.entries()] == [e.key for e in pages]


def test_discard_forgets_the_page_in_every_tier(tmp_path):
    pages = chain(3)
    store = tiered(tmp_path)
    put_all(store, pages)
    store.flush()
    store.get(pages[0].key)  # now in host and on disk
    store.discard(pages[0].key)
    assert pages[0].key not in store
    assert store.get(pages[0].key) is None


def test_without_a_disk_evicted_pages_are_simply_gone(tmp_path):
    pages = chain(3)
    store = TieredPageStore(HostPageStore(2 * PAGE_BYTES), None)
    put_all(store, pages)
    assert store.get(pages[0].key) is None
    assert store.stats()["host_evicted"] == 1


def test_stats_name_each_tier(tmp_path):
    stats = tiered(tmp_path).stats()
    assert {"host_hits", "disk_hits", "disk_refused_corrupt", "hits", "misses", "refused_corrupt"} <= stats.keys()


def test_a_host_store_serves_one_tiered_store_only(tmp_path):
    host = HostPageStore(PAGE_BYTES)
    TieredPageStore(host, None)
    with pytest.raises(ValueError, match="on_evict"):
        TieredPageStore(host, None)


def test_a_closed_store_refuses_puts(tmp_path):
    store = tiered(tmp_path)
    store.close()
    entry = chain(1)[0]
    assert store.put(entry, page_for(entry)) is False


class FailingDisk(DiskPageStore):
    """A disk whose first put fails as a full disk would."""

    failed = False

    def put(self, entry, page):
        if not self.failed:
            self.failed = True
            raise OSError(28, "No space left on device")
        return super().put(entry, page)


def test_a_failed_disk_write_is_counted_and_write_back_goes_on(tmp_path):
    pages = chain(4)
    store = TieredPageStore(HostPageStore(PAGE_BYTES), FailingDisk(tmp_path, FINGERPRINT, 64 * MB))
    put_all(store, pages)  # demotes pages 0, 1, 2; writing page 0 fails
    store.flush()
    assert [e.key in store.disk for e in pages[:3]] == [False, True, True]
    assert store.stats()["writeback_dropped"] == 1


def test_a_bad_key_is_a_value_error_on_the_callers_thread(tmp_path):
    entry = chain(1)[0]
    bad = type(entry)(key=b"short", parent=None, tokens=entry.tokens, namespace="")
    with pytest.raises(ValueError, match="16 bytes"):
        tiered(tmp_path, write_through=True).put(bad, page_for(entry))


def test_pages_written_back_through_reused_buffers_stay_whole(tmp_path):
    pages = chain(8)
    store = TieredPageStore(
        HostPageStore(PAGE_BYTES), DiskPageStore(tmp_path, FINGERPRINT, 64 * MB), max_pending_bytes=2 * PAGE_BYTES
    )
    for i, entry in enumerate(pages):
        store.put(entry, page_for(entry))
        if i % 2:
            store.flush()  # the written pages' buffers go back to the spares
    store.flush()
    assert store.stats()["writeback_dropped"] == 0
    for entry in pages[:-1]:
        np.testing.assert_array_equal(store.disk.get(entry.key), page_for(entry))


def test_tier_of_names_the_tier_a_get_would_read(tmp_path):
    a, b, c, d = chain(4)
    disk = GatedDisk(tmp_path, FINGERPRINT, 64 * MB)
    store = TieredPageStore(HostPageStore(2 * PAGE_BYTES), disk)
    put_all(store, [a, b, c])  # a evicted from host, queued while the disk is shut: still in RAM
    assert [store.tier_of(e.key) for e in (a, b, c, d)] == ["host", "host", "host", None]
    disk.gate.set()
    store.flush()
    assert store.tier_of(a.key) == "disk"
    store.get(a.key)  # promoted back into host
    assert store.tier_of(a.key) == "host"
    store.close()
