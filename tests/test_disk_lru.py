"""The on-disk caches' size cap (trellis_jax/disk_lru.py): past the cap the entries used longest ago go first,
and an entry just written, held or being read never goes."""

from __future__ import annotations

import fcntl
import os

import pytest

from trellis_jax import disk_lru


def entry(directory, name: str, size: int, used_s: int):
    """A file entry of `size` bytes whose recorded use is `used_s` seconds after the epoch."""
    path = directory / name
    path.write_bytes(b"x" * size)
    os.utime(path, (used_s, used_s))
    return path


def names(directory) -> set[str]:
    return {p.name for p in directory.iterdir()}


def test_past_the_cap_the_oldest_used_entries_go_first(tmp_path):
    for name, used in [("b", 200), ("a", 100), ("c", 300), ("d", 400)]:
        entry(tmp_path, name, 10, used)
    evicted = disk_lru.evict_to_cap(tmp_path, 25)
    assert [p.name for p in evicted] == ["a", "b"]
    assert names(tmp_path) == {"c", "d"}


def test_under_the_cap_nothing_goes(tmp_path):
    for name, used in [("a", 100), ("b", 200)]:
        entry(tmp_path, name, 10, used)
    assert disk_lru.evict_to_cap(tmp_path, 20) == []
    assert names(tmp_path) == {"a", "b"}


def test_a_recorded_use_makes_an_entry_the_newest(tmp_path):
    a = entry(tmp_path, "a", 10, 100)
    entry(tmp_path, "b", 10, 200)
    disk_lru.record_use(a)
    disk_lru.evict_to_cap(tmp_path, 10)
    assert names(tmp_path) == {"a"}


def test_a_kept_entry_stays_even_when_it_alone_exceeds_the_cap(tmp_path):
    entry(tmp_path, "new", 50, 100)
    entry(tmp_path, "old", 10, 200)
    disk_lru.evict_to_cap(tmp_path, 20, keep=["new"])
    assert names(tmp_path) == {"new"}


def test_an_entry_being_read_is_skipped(tmp_path):
    a = entry(tmp_path, "a", 10, 100)
    entry(tmp_path, "b", 10, 200)
    with disk_lru.using(a):
        disk_lru.evict_to_cap(tmp_path, 10)
    assert names(tmp_path) == {"a"}


def test_a_held_entry_is_skipped_until_released(tmp_path):
    a = entry(tmp_path, "a", 10, 100)
    fd = disk_lru.hold(a)
    assert disk_lru.evict_to_cap(tmp_path, 0) == []
    os.close(fd)
    assert [p.name for p in disk_lru.evict_to_cap(tmp_path, 0)] == ["a"]


def test_directory_entries_count_every_file_inside_and_go_whole(tmp_path):
    old = tmp_path / "old"
    (old / "sub").mkdir(parents=True)
    (old / "w.bin").write_bytes(b"x" * 30)
    (old / "sub" / "more.bin").write_bytes(b"x" * 30)
    os.utime(old, (100, 100))
    entry(tmp_path, "new", 10, 200)
    disk_lru.evict_to_cap(tmp_path, 60)  # 70 in all: "old" is 60 of them
    assert names(tmp_path) == {"new"}


def test_staging_names_are_neither_counted_nor_evicted(tmp_path):
    entry(tmp_path, ".tmp-writing", 100, 50)
    entry(tmp_path, "a", 10, 100)
    assert disk_lru.evict_to_cap(tmp_path, 10) == []
    assert names(tmp_path) == {".tmp-writing", "a"}


def test_using_a_missing_entry_is_a_miss(tmp_path):
    with pytest.raises(FileNotFoundError), disk_lru.using(tmp_path / "absent"):
        pass


def test_using_an_entry_being_evicted_is_a_miss(tmp_path):
    a = entry(tmp_path, "a", 10, 100)
    evictor = os.open(a, os.O_RDONLY)
    fcntl.flock(evictor, fcntl.LOCK_EX)
    try:
        with pytest.raises(FileNotFoundError), disk_lru.using(a):
            pass
    finally:
        os.close(evictor)


def test_cap_from_env_reads_sizes_and_falls_back_to_the_default(monkeypatch):
    monkeypatch.setenv("TRELLIS_TEST_CAP", "2GiB")
    assert disk_lru.cap_from_env("TRELLIS_TEST_CAP", 7) == 2 << 30
    monkeypatch.setenv("TRELLIS_TEST_CAP", "")
    assert disk_lru.cap_from_env("TRELLIS_TEST_CAP", 7) == 7


def test_an_unreadable_cap_names_its_variable(monkeypatch):
    monkeypatch.setenv("TRELLIS_TEST_CAP", "lots")
    with pytest.raises(ValueError, match=r"\$TRELLIS_TEST_CAP.*'lots'"):
        disk_lru.cap_from_env("TRELLIS_TEST_CAP", 7)
