"""The serialized executables' size cap (runner/executable_cache.py over disk_lru.py): a save past the cap
deletes other fingerprints' programs, least recently used first, never those a live cache uses."""

from __future__ import annotations

import gc
import os

import jax
import jax.numpy as jnp
import pytest

from trellis_jax.runner.executable_cache import MAX_BYTES_ENV, ExecutableCache

HUGE = 1 << 40


@pytest.fixture(scope="module")
def compiled():
    return jax.jit(lambda x: x * 2 + 1).lower(jnp.float32(1)).compile()


def saved(root, fingerprint: str, compiled, used_s: int) -> int:
    """Save one program under `fingerprint` with a cache dropped at once; its use recorded at `used_s`. -> bytes."""
    cache = ExecutableCache(root, fingerprint, max_bytes=HUGE)
    cache.save("step", compiled)
    del cache
    gc.collect()  # releases its hold on the directory
    os.utime(root / fingerprint, (used_s, used_s))
    return (root / fingerprint / "step").stat().st_size


def test_a_save_past_the_cap_deletes_the_least_recently_used_fingerprint(tmp_path, compiled):
    size = saved(tmp_path, "old", compiled, 100)
    saved(tmp_path, "newer", compiled, 200)
    ExecutableCache(tmp_path, "now", max_bytes=2 * size).save("step", compiled)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["newer", "now"]


def test_a_fingerprint_a_live_cache_uses_is_never_deleted(tmp_path, compiled):
    saved(tmp_path, "old", compiled, 100)
    live = ExecutableCache(tmp_path, "old", max_bytes=HUGE)
    assert live.load("step") is not None
    os.utime(tmp_path / "old", (100, 100))
    ExecutableCache(tmp_path, "now", max_bytes=1).save("step", compiled)
    assert (tmp_path / "old" / "step").exists()


def test_a_load_records_a_use(tmp_path, compiled):
    saved(tmp_path, "a", compiled, 100)
    ExecutableCache(tmp_path, "a", max_bytes=HUGE).load("step")
    assert (tmp_path / "a").stat().st_mtime > 100


def test_the_cap_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(MAX_BYTES_ENV, "3MiB")
    assert ExecutableCache(tmp_path, "a").max_bytes == 3 << 20
