"""The real page stores under a real engine (tiny Llama, deterministic): built from --kv-host-bytes and
--kv-cache-dir (engine/page_store.py), a clean stop (Engine.close) writes the cached prefixes to disk, and
an engine started on the same directory rebuilds them: its first request hits them and its greedy output
equals a cold engine's.

A batch-invariant runner (deterministic=True): a hit and a recompute give the same floats, so any difference
comes from a page that does not hold the KV its key names."""

from __future__ import annotations

import asyncio

import pytest

from trellis_jax.engine.async_engine import AsyncEngine
from trellis_jax.engine.builder import build_engine
from trellis_jax.kvstore import HostPageStore, TieredPageStore
from trellis_jax.serve.tier_metrics import tier_metrics
from trellis_testing.kv_restart import GREEDY, SYSTEM, ask
from trellis_testing.kv_restart import restart_config as config


@pytest.fixture(scope="module")
def loaded(llama):
    return llama[0]


@pytest.fixture(scope="module")
def runner(llama):  # conftest's: built for restart_config(), the `config` here
    return llama[1]


def test_host_bytes_alone_builds_a_host_store(loaded, runner):
    engine, _ = build_engine(config(kv_host_bytes="1MiB"), loaded, runner)
    assert isinstance(engine.tiers.store, HostPageStore)
    assert engine.tiers.store.capacity_bytes == 1 << 20
    engine.close()


def test_cache_dir_builds_a_tiered_store_over_disk(loaded, runner, tmp_path):
    engine, _ = build_engine(config(kv_cache_dir=str(tmp_path)), loaded, runner)
    assert isinstance(engine.tiers.store, TieredPageStore)
    assert engine.tiers.store.disk is not None
    engine.close()
    assert (tmp_path / "manifest.json").exists()


def test_restart_after_a_clean_stop_hits_and_matches_cold(loaded, runner, tmp_path):
    cold, _ = build_engine(config(), loaded, runner)
    expected = ask(cold, "cold", 1)
    first, _ = build_engine(config(kv_cache_dir=str(tmp_path)), loaded, runner)
    ask(first, "a", 0)
    first.close()
    second, _ = build_engine(config(kv_cache_dir=str(tmp_path)), loaded, runner)
    second.tiers.cost.prefill_tokens_per_s = 1.0  # reloading always pays, whatever this machine measures
    output = ask(second, "b", 1)
    assert output.num_cached_tokens >= len(SYSTEM)
    assert output.token_ids == expected.token_ids
    second.close()


def test_reloads_are_counted_per_tier_in_stats_and_metrics(loaded, runner, tmp_path):
    first, _ = build_engine(config(kv_cache_dir=str(tmp_path)), loaded, runner)
    ask(first, "a", 0)
    first.close()
    second, _ = build_engine(config(kv_cache_dir=str(tmp_path)), loaded, runner)
    second.tiers.cost.prefill_tokens_per_s = 1.0
    ask(second, "b", 1)  # after a restart host RAM is empty: every page comes from disk
    stats = second.tier_stats()
    assert stats["counters"].hit_tokens == {"disk": len(SYSTEM)}
    families = {f.name: f for f in tier_metrics(stats)}
    samples = {s.labels["tier"]: s.value for s in families["trellis_kv_tier_hit_tokens"].samples}
    assert samples == {"disk": float(len(SYSTEM))}
    second.close()


def test_close_twice_is_harmless_and_refuses_new_requests(loaded, runner, tmp_path):
    engine, _ = build_engine(config(kv_cache_dir=str(tmp_path)), loaded, runner)
    engine.close()
    engine.close()
    with pytest.raises(ValueError, match="closed"):
        engine.add_request("late", SYSTEM, GREEDY)


def test_async_engine_shutdown_persists_for_the_next_start(loaded, runner, tmp_path):
    first, tokenizer = build_engine(config(kv_cache_dir=str(tmp_path)), loaded, runner)
    served = AsyncEngine(first, tokenizer)

    async def one():
        return [d async for d in served.generate(SYSTEM + [200, 201, 202], GREEDY, request_id="a")]

    asyncio.run(one())
    served.shutdown()
    second, _ = build_engine(config(kv_cache_dir=str(tmp_path)), loaded, runner)
    assert second.tier_stats()["demoted_pages_in_tree"] >= len(SYSTEM) // 16
    second.close()


def test_async_engine_never_started_still_closes_its_engine(loaded, runner, tmp_path):
    engine, tokenizer = build_engine(config(kv_cache_dir=str(tmp_path)), loaded, runner)
    AsyncEngine(engine, tokenizer).shutdown()
    with pytest.raises(ValueError, match="closed"):
        engine.add_request("late", SYSTEM, GREEDY)
