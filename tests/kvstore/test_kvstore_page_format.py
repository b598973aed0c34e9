"""The page file's binary format (kvstore/page_file.py, format 2): every metadata field comes back as
written, and a file or a directory of the older JSON format (1) is refused as foreign, counted, never served."""

import json

import numpy as np
from kv_pages import BF16, FINGERPRINT, chain, page_for

from trellis_jax.kvstore import DiskPageStore
from trellis_jax.kvstore.disk import page_path
from trellis_jax.kvstore.manifest import digest_of
from trellis_jax.kvstore.page_file import FORMAT_VERSION

MB = 1 << 20


def open_store(directory):
    return DiskPageStore(directory, FINGERPRINT, 64 * MB)


def written(directory, entries, dtype=np.float32):
    store = open_store(directory)
    for entry in entries:
        assert store.put(entry, page_for(entry, dtype))
    store.close()


def test_every_metadata_field_survives_a_reopen(tmp_path):
    entries = chain(3, first_token=2**40, namespace="tenant/é")  # token ids past 32 bits, a UTF-8 namespace
    written(tmp_path, entries, BF16)
    store = open_store(tmp_path)
    assert list(store.entries()) == entries
    page = store.get(entries[2].key)
    assert page.dtype == BF16 and page.tobytes() == page_for(entries[2], BF16).tobytes()


def test_a_page_file_of_format_1_is_refused_at_open_and_counted(tmp_path):
    entry = chain(1)[0]
    written(tmp_path, [entry])
    path = page_path(tmp_path, entry.key)
    data = bytearray(path.read_bytes())
    data[4:6] = (1).to_bytes(2, "little")  # the format version field
    path.write_bytes(bytes(data))
    store = open_store(tmp_path)
    assert entry.key not in store and store.get(entry.key) is None
    assert store.stats()["refused_corrupt"] == 1 and not path.exists()


def test_a_directory_written_under_format_1_is_refused_whole(tmp_path):
    written(tmp_path, chain(2))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    old = {**manifest["fingerprint"], "format_version": "1"}
    (tmp_path / "manifest.json").write_text(json.dumps({"fingerprint": old, "digest": digest_of(old)}))
    store = open_store(tmp_path)
    assert len(store) == 0 and store.stats()["refused_foreign"] == 2
    assert json.loads((tmp_path / "manifest.json").read_text())["fingerprint"]["format_version"] == str(FORMAT_VERSION)
