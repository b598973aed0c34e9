"""fingerprint_of: every field that changes KV changes the fingerprint; file hashes are cached across restarts."""

import json
import os

import pytest

from trellis_jax.kvstore import fingerprint
from trellis_jax.kvstore.fingerprint import HASH_CACHE_NAME, fingerprint_of

ROPE = {"theta": 10000.0, "scaling": None}


@pytest.fixture
def files(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"weights v1" * 1000)
    (tmp_path / "tokenizer.json").write_text('{"vocab": {}}')
    return tmp_path


def of(files, **changes):
    args = dict(
        weights=files / "model.gguf",
        tokenizer=files / "tokenizer.json",
        chat_template="{{ messages }}",
        dtype="float32",
        kv_dtype="bfloat16",
        page_size=16,
        rope=ROPE,
        hash_cache_dir=files / "kv",
    )
    return fingerprint_of(**{**args, **changes})


def test_every_field_is_a_string(files):
    fp = of(files)
    assert set(fp) == {"weights", "tokenizer", "chat_template", "dtype", "kv_dtype", "page_size", "rope", "arithmetic"}
    assert all(isinstance(v, str) for v in fp.values())


def test_the_same_inputs_give_the_same_fingerprint(files):
    assert of(files) == of(files, rope=dict(reversed(ROPE.items())))


@pytest.mark.parametrize(
    "change",
    [
        {"chat_template": "other"},
        {"dtype": "bfloat16"},
        {"kv_dtype": "float32"},
        {"page_size": 32},
        {"rope": {**ROPE, "theta": 500000.0}},
        {"tokenizer": None},
        {"arithmetic": {"quantization": "int8"}},
    ],
    ids=lambda c: next(iter(c)),
)
def test_each_field_changes_the_fingerprint(files, change):
    assert of(files, **change) != of(files)


def test_other_weight_contents_change_the_fingerprint(files):
    before = of(files)["weights"]
    (files / "model.gguf").write_bytes(b"weights v2" * 1000)
    assert of(files)["weights"] != before


def test_a_restart_does_not_hash_an_unchanged_file_again(files, monkeypatch):
    first = of(files)
    calls = []
    monkeypatch.setattr(fingerprint, "file_digest", lambda path: calls.append(path) or "rehashed")
    assert of(files) == first
    assert calls == []


def test_a_file_with_a_new_mtime_is_hashed_again(files, monkeypatch):
    of(files)
    stat = (files / "model.gguf").stat()
    os.utime(files / "model.gguf", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    monkeypatch.setattr(fingerprint, "file_digest", lambda path: "rehashed")
    assert of(files)["weights"] == "rehashed"


def test_the_hash_cache_lives_in_the_store_directory(files):
    of(files)
    cached = json.loads((files / "kv" / HASH_CACHE_NAME).read_text())
    assert str((files / "model.gguf").resolve()) in cached


def test_a_damaged_hash_cache_is_rebuilt(files):
    first = of(files)
    (files / "kv" / HASH_CACHE_NAME).write_text("{not json")
    assert of(files) == first


def test_sharded_weights_hash_every_shard(files):
    (files / "shard2").write_bytes(b"more")
    assert of(files, weights=[files / "model.gguf", files / "shard2"]) != of(files)


@pytest.mark.parametrize(
    "bad",
    [{"page_size": 0}, {"page_size": True}, {"dtype": ""}, {"rope": [1]}, {"chat_template": 3}, {"weights": []}],
    ids=["page_size=0", "page_size=True", "dtype=''", "rope-list", "template-int", "no-weights"],
)
def test_bad_input_is_a_value_error(files, bad):
    with pytest.raises(ValueError):
        of(files, **bad)


def test_a_missing_weights_file_is_a_value_error(files):
    with pytest.raises(ValueError, match="not a file"):
        of(files, weights=files / "absent.gguf")
