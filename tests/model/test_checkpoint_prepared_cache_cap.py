"""The prepared-weight cache's size cap (prepared_cache.py over disk_lru.py): storing an entry past the cap
deletes the entries used longest ago, a hit counts as a use, and the cap can come from the environment."""

import os

import pytest
from checkpoint_testlib import write_tiny_gguf

from trellis_jax.checkpoints import LoadedModel
from trellis_jax.checkpoints.gguf_loader import load_gguf_weights
from trellis_jax.checkpoints.prepared_cache import MAX_BYTES_ENV, entry_key, load_or_build

pytest.importorskip("gguf")

# Three entries of one file: the key differs by weight format and by whether packing was required.
PACKED, FLOAT, PACKED_REQUIRED = ("packed", False), ("float", False), ("packed", True)


class Builds:
    def __init__(self, path, cache_dir):
        self.path, self.cache_dir, self.calls = str(path), cache_dir, 0

    def load(self, variant, max_bytes=None):
        weight_format, required = variant

        def build():
            self.calls += 1
            config, params = load_gguf_weights(self.path, "float32", weight_format=weight_format)
            return LoadedModel(config, params, None, self.path)

        return load_or_build(self.path, "float32", weight_format, required, str(self.cache_dir), build, max_bytes)

    def entry(self, variant):
        return self.cache_dir / entry_key(self.path, "float32", *variant)


def size(directory) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


@pytest.fixture
def builds(tmp_path, fixtures_dir):
    gguf = write_tiny_gguf(tmp_path / "m.gguf", fixtures_dir / "tiny_llama", "Q8_0")
    return Builds(gguf, tmp_path / "cache")


def test_a_store_past_the_cap_deletes_the_least_recently_used_entry_and_a_hit_is_a_use(builds):
    builds.load(PACKED)
    builds.load(FLOAT)
    os.utime(builds.entry(PACKED), (100, 100))
    os.utime(builds.entry(FLOAT), (200, 200))
    builds.load(PACKED)  # a hit: now the newest
    builds.load(PACKED_REQUIRED, max_bytes=2 * size(builds.entry(PACKED)))  # room for two packed entries
    assert builds.entry(PACKED).is_dir() and builds.entry(PACKED_REQUIRED).is_dir()
    assert not builds.entry(FLOAT).exists()
    assert builds.calls == 3


def test_the_entry_just_stored_stays_even_over_the_cap(builds):
    builds.load(PACKED)
    builds.load(FLOAT, max_bytes=1)
    assert not builds.entry(PACKED).exists()
    assert builds.entry(FLOAT).is_dir()
    builds.load(FLOAT)
    assert builds.calls == 2  # and it reads back


def test_the_cap_comes_from_the_environment(builds, monkeypatch):
    builds.load(PACKED)
    monkeypatch.setenv(MAX_BYTES_ENV, "1")
    builds.load(FLOAT)
    assert not builds.entry(PACKED).exists()


def test_an_unreadable_cap_in_the_environment_is_a_clear_error(builds, monkeypatch):
    monkeypatch.setenv(MAX_BYTES_ENV, "a lot")
    with pytest.raises(ValueError, match=MAX_BYTES_ENV):
        builds.load(PACKED)
