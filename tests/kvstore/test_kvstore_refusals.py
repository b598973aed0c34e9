"""DiskPageStore never serves wrong KV: damaged, truncated and foreign pages are refused, deleted and counted."""

import logging
import shutil

import numpy as np
import pytest
from kv_pages import FINGERPRINT, chain, page_for

from trellis_jax.kvstore import DiskPageStore
from trellis_jax.kvstore.disk import page_path

MB = 1 << 20


def open_store(directory, fingerprint=FINGERPRINT):
    return DiskPageStore(directory, fingerprint, 64 * MB)


def one_page(directory, fingerprint=FINGERPRINT):
    """Write one page, close; return its entry and file path."""
    entry = chain(1)[0]
    store = open_store(directory, fingerprint)
    store.put(entry, page_for(entry))
    store.close()
    return entry, page_path(directory, entry.key)


def flip_byte(path, offset_from_end):
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_payload_byte_is_refused_counted_and_deleted_on_get(tmp_path):
    entry, path = one_page(tmp_path)
    flip_byte(path, offset_from_end=7)
    store = open_store(tmp_path)
    assert store.get(entry.key) is None
    assert store.stats()["refused_corrupt"] == 1
    assert entry.key not in store and not path.exists()


def test_a_flipped_metadata_byte_is_refused(tmp_path):
    entry, path = one_page(tmp_path)
    data = bytearray(path.read_bytes())
    data[data.index(np.asarray(entry.tokens[-1:], "<i8").tobytes())] ^= 0x01  # a token: parses, fails the crc
    path.write_bytes(bytes(data))
    store = open_store(tmp_path)
    assert store.get(entry.key) is None
    assert store.stats()["refused_corrupt"] == 1


def test_a_truncated_file_is_refused_at_open(tmp_path):
    entry, path = one_page(tmp_path)
    path.write_bytes(path.read_bytes()[:-100])
    store = open_store(tmp_path)
    assert entry.key not in store and not path.exists()
    assert store.get(entry.key) is None
    assert store.stats()["refused_corrupt"] == 1


def test_a_file_truncated_inside_its_header_is_refused_at_open(tmp_path):
    entry, path = one_page(tmp_path)
    path.write_bytes(path.read_bytes()[:10])
    assert open_store(tmp_path).stats()["refused_corrupt"] == 1


def test_a_page_renamed_onto_another_key_is_refused(tmp_path):
    entry, path = one_page(tmp_path)
    other = chain(1, first_token=50)[0]
    target = page_path(tmp_path, other.key)
    target.parent.mkdir(exist_ok=True)
    shutil.copy(path, target)
    store = open_store(tmp_path)
    assert other.key not in store and entry.key in store
    assert store.stats()["refused_corrupt"] == 1


def test_another_fingerprint_refuses_the_directory_with_one_log_line(tmp_path, caplog):
    entries = chain(3)
    store = open_store(tmp_path)
    for entry in entries:
        store.put(entry, page_for(entry))
    store.close()
    with caplog.at_level(logging.WARNING, logger="trellis_jax.kvstore"):
        store = open_store(tmp_path, {**FINGERPRINT, "weights": "another model"})
    assert len(caplog.records) == 1 and "weights" in caplog.records[0].getMessage()
    assert store.stats()["refused_corrupt"] == store.stats()["refused_foreign"] == 3
    assert [e.key in store for e in entries] == [False] * 3


def test_another_page_size_refuses_the_directory(tmp_path):
    entry, _ = one_page(tmp_path)
    store = open_store(tmp_path, {**FINGERPRINT, "page_size": "16"})
    assert store.get(entry.key) is None
    assert store.stats()["refused_foreign"] == 1


def test_a_refused_directory_then_serves_the_new_fingerprint(tmp_path):
    one_page(tmp_path)
    new = {**FINGERPRINT, "kv_dtype": "bfloat16"}
    entry, _ = one_page(tmp_path, new)
    store = open_store(tmp_path, new)
    assert store.get(entry.key) is not None
    assert store.stats()["refused_corrupt"] == 0


def test_pages_without_a_manifest_are_refused(tmp_path):
    entry, _ = one_page(tmp_path)
    (tmp_path / "manifest.json").unlink()
    store = open_store(tmp_path)
    assert entry.key not in store
    assert store.stats()["refused_foreign"] == 1


def test_a_page_file_copied_in_from_another_models_directory_is_refused(tmp_path):
    entry, foreign = one_page(tmp_path / "other", {**FINGERPRINT, "weights": "another model"})
    open_store(tmp_path / "mine").close()
    target = tmp_path / "mine" / foreign.relative_to(tmp_path / "other")
    target.parent.mkdir(parents=True)
    shutil.copy(foreign, target)
    store = open_store(tmp_path / "mine")
    assert entry.key not in store
    assert store.stats()["refused_corrupt"] == 1


@pytest.mark.parametrize("garbage", [b"", b"TKVP", b"\0" * 4096], ids=["empty", "magic-only", "zeros"])
def test_garbage_in_a_page_file_is_refused(tmp_path, garbage):
    entry, path = one_page(tmp_path)
    path.write_bytes(garbage)
    store = open_store(tmp_path)
    assert store.get(entry.key) is None
    assert store.stats()["refused_corrupt"] == 1


def test_a_file_truncated_while_the_store_is_open_is_refused_on_get(tmp_path):
    entry = chain(1)[0]
    store = open_store(tmp_path)
    store.put(entry, page_for(entry))
    path = page_path(tmp_path, entry.key)
    path.write_bytes(path.read_bytes()[:-1])
    assert store.get(entry.key) is None
    assert store.stats()["refused_corrupt"] == 1 and entry.key not in store
