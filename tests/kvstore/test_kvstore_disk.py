"""DiskPageStore: round trips across a restart, capacity, locking, and the order entries() rebuilds in."""

import os

import numpy as np
import pytest
from kv_pages import BF16, FINGERPRINT, SHAPE, chain, page_for

from trellis_jax.kvstore import DiskPageStore
from trellis_jax.kvstore.disk import page_path

MB = 1 << 20


def open_store(directory, capacity=64 * MB, fingerprint=FINGERPRINT, **kwargs):
    return DiskPageStore(directory, fingerprint, capacity, **kwargs)


def written(directory, entries, dtype=np.float32, **kwargs):
    """A store holding `entries`, closed (as after a clean stop)."""
    store = open_store(directory, **kwargs)
    for entry in entries:
        assert store.put(entry, page_for(entry, dtype))
    store.close()


@pytest.mark.parametrize("dtype", [np.float32, BF16], ids=["float32", "bfloat16"])
def test_a_reopened_store_serves_the_page_bit_identical(tmp_path, dtype):
    entry = chain(1)[0]
    written(tmp_path, [entry], dtype)
    got = open_store(tmp_path).get(entry.key)
    assert got.dtype == np.dtype(dtype) and got.shape == SHAPE
    assert got.tobytes() == page_for(entry, dtype).tobytes()


def test_a_reopened_store_lists_its_entries_parents_first(tmp_path):
    pages = chain(6)
    written(tmp_path, reversed(pages))
    assert list(open_store(tmp_path).entries()) == pages


def test_without_fsync_pages_still_come_back_whole(tmp_path):
    pages = chain(3)
    written(tmp_path, pages, fsync=False)
    store = open_store(tmp_path, fsync=False)
    assert all(np.array_equal(store.get(e.key), page_for(e)) for e in pages)


def test_an_absent_key_is_a_miss(tmp_path):
    store = open_store(tmp_path)
    assert store.get(chain(1)[0].key) is None
    assert store.stats()["misses"] == 1


def test_past_the_capacity_the_least_recently_used_page_goes(tmp_path):
    a, b, c, d = chain(4)
    store = open_store(tmp_path, capacity=10 * MB)
    for entry in (a, b, c):
        store.put(entry, page_for(entry))
    page_file_bytes = store.stats()["bytes"] // 3
    store.close()
    store = open_store(tmp_path, capacity=3 * page_file_bytes)
    store.get(a.key)  # b is now the least recently used
    store.put(d, page_for(d))
    assert [e.key in store for e in (a, b, c, d)] == [True, False, True, True]
    assert store.stats()["evicted"] == 1
    assert len(list((tmp_path / "pages").glob("*/*.kvp"))) == 3


def test_a_smaller_capacity_at_reopen_keeps_the_newest_pages(tmp_path):
    pages = chain(4)
    store = open_store(tmp_path)
    for i, entry in enumerate(pages):
        store.put(entry, page_for(entry))
        os.utime(page_path(tmp_path, entry.key), ns=(i * 10**9, i * 10**9))  # distinct mtimes on a coarse clock
    page_file_bytes = store.stats()["bytes"] // 4
    store.close()
    store = open_store(tmp_path, capacity=2 * page_file_bytes)
    assert [e.key in store for e in pages] == [False, False, True, True]


def test_a_page_larger_than_the_capacity_is_refused(tmp_path):
    entry = chain(1)[0]
    store = open_store(tmp_path, capacity=1000)
    assert store.put(entry, page_for(entry)) is False
    assert entry.key not in store


def test_a_second_store_on_an_open_directory_is_refused(tmp_path):
    store = open_store(tmp_path)
    with pytest.raises(RuntimeError, match="in use"):
        open_store(tmp_path)
    store.close()
    open_store(tmp_path).close()  # released by close


def test_partial_writes_left_by_a_killed_process_are_deleted_at_open(tmp_path):
    open_store(tmp_path).close()
    (tmp_path / "tmp" / "deadbeef.1.tmp").write_bytes(b"half a page")
    open_store(tmp_path)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_discarded_page_is_gone_from_disk_too(tmp_path):
    entry = chain(1)[0]
    store = open_store(tmp_path)
    store.put(entry, page_for(entry))
    store.discard(entry.key)
    store.discard(entry.key)  # absent: no error
    assert store.get(entry.key) is None
    assert list((tmp_path / "pages").glob("*/*.kvp")) == []


def test_a_key_of_the_wrong_length_is_a_value_error(tmp_path):
    entry = chain(1)[0]
    bad = type(entry)(key=b"short", parent=None, tokens=entry.tokens, namespace="")
    with pytest.raises(ValueError, match="16 bytes"):
        open_store(tmp_path).put(bad, page_for(entry))


def test_the_format_version_is_the_stores_to_set(tmp_path):
    with pytest.raises(ValueError, match="format_version"):
        open_store(tmp_path, fingerprint={**FINGERPRINT, "format_version": "0"})


def test_stats_count_bytes_written_and_read(tmp_path):
    entry = chain(1)[0]
    store = open_store(tmp_path)
    store.put(entry, page_for(entry))
    store.get(entry.key)
    stats = store.stats()
    assert stats["pages"] == 1 and stats["hits"] == 1
    assert stats["bytes_written"] == stats["bytes_read"] == stats["bytes"] > page_for(entry).nbytes


def test_keys_by_recency_lists_the_least_recently_used_first(tmp_path):
    entries = chain(3)
    store = open_store(tmp_path)  # one open store: file mtimes (the order at reopen) may tie within a tick
    for entry in entries:
        store.put(entry, page_for(entry))
    store.get(entries[0].key)  # now the most recently used
    assert store.keys_by_recency() == [entries[1].key, entries[2].key, entries[0].key]
