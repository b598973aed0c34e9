"""A warm restart's prefetch under a real engine (tiny Llama, deterministic; engine/prefetch.py): the
persisted pages go onto the device before the first request, which then hits them there and answers as a
cold engine does; a damaged page is not prefetched (counted); a request during prefetch is correct; the
fraction of the pool bounds it and 0 turns it off."""

from __future__ import annotations

import pathlib
import threading
import time

import pytest

from trellis_jax.engine.async_engine import AsyncEngine
from trellis_jax.engine.builder import build_engine
from trellis_jax.kvstore.api import chain_key
from trellis_jax.kvstore.disk import page_path
from trellis_jax.serve.tier_metrics import tier_metrics
from trellis_testing.kv_restart import SYSTEM, ask, restart_config

SYSTEM_PAGES = len(SYSTEM) // 16


def fill(directory, llama) -> None:
    """An engine serves one request on `directory` and stops cleanly (its prefix pages go to disk)."""
    engine, _ = build_engine(restart_config(kv_cache_dir=str(directory)), *llama)
    ask(engine, "a", 0)
    engine.close()


def restart(directory, llama, prefetch: float = 0.5):
    engine, _ = build_engine(restart_config(kv_cache_dir=str(directory), kv_prefetch=prefetch), *llama)
    engine.tiers.cost.prefill_tokens_per_s = 1.0  # a request reloads whatever it can: the path to compare with
    return engine


def system_keys() -> list[bytes]:
    keys, parent = [], None
    for i in range(SYSTEM_PAGES):
        parent = chain_key(parent, SYSTEM[i * 16 : (i + 1) * 16], "")
        keys.append(parent)
    return keys


def device_keys(engine) -> set[bytes]:
    return {copy.key for copy in engine.scheduler.kv.cache.unsaved_pages(lambda key: False)}


def test_prefetch_puts_exactly_the_persisted_pages_on_the_device(llama, tmp_path):
    fill(tmp_path, llama)
    engine = restart(tmp_path, llama, prefetch=1.0)
    persisted = set(engine.tiers.store.disk.keys_by_recency())
    assert engine.wait_prefetch(30)
    assert device_keys(engine) == persisted == set(system_keys())
    assert engine.tier_stats()["counters"].prefetched_pages == len(persisted)
    engine.scheduler.check_integrity()
    engine.close()


def test_the_first_request_after_prefetch_hits_the_device_and_matches_cold(llama, cold_output, tmp_path):
    fill(tmp_path, llama)
    engine = restart(tmp_path, llama)
    assert engine.wait_prefetch(30)
    output = ask(engine, "b", 1)
    assert output.num_cached_tokens >= len(SYSTEM)
    assert engine.tier_stats()["counters"].hit_tokens == {}  # nothing reloaded from disk: all on the device
    assert output.token_ids == cold_output.token_ids
    engine.close()


def test_a_damaged_page_is_not_prefetched_and_is_counted(llama, cold_output, tmp_path):
    fill(tmp_path, llama)
    path = page_path(pathlib.Path(tmp_path), system_keys()[1])
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the payload's last byte: the header parses, the checksum does not match
    path.write_bytes(bytes(data))
    engine = restart(tmp_path, llama)
    assert engine.wait_prefetch(30)
    assert device_keys(engine) == {system_keys()[0]}  # the page above it only; those below are not read
    families = {f.name: f for f in tier_metrics(engine.tier_stats())}
    dropped = {s.labels["reason"]: s.value for s in families["trellis_kv_prefetch_dropped_pages"].samples}
    assert dropped["refused"] == 1
    assert families["trellis_kv_prefetched_pages"].samples[0].value == 1
    output = ask(engine, "b", 1)
    assert output.token_ids == cold_output.token_ids
    engine.close()


def started_slowly(engine, delay_s: float):
    """Prefetch on `engine` through a read whose first page arrives at once and the others `delay_s` later
    (a slow disk), once the first page is on the device; -> {key: times read}."""
    disk, first, reads = engine.tiers.store.disk, system_keys()[0], {}
    released = threading.Event()

    def slow_read(key):
        if key != first:
            released.wait(30)
        reads[key] = reads.get(key, 0) + 1
        return disk.get(key)

    engine.tiers.start_prefetch(SYSTEM_PAGES, slow_read)
    deadline = time.monotonic() + 30
    while engine.tier_stats()["counters"].prefetched_pages == 0 and time.monotonic() < deadline:
        engine.prefetch_turn()  # what the idle server does, until the first page is on the device
        time.sleep(0.01)
    threading.Timer(delay_s, released.set).start()
    return reads


def test_a_request_during_prefetch_waits_for_the_pages_in_flight_and_matches_cold(llama, cold_output, tmp_path):
    fill(tmp_path, llama)
    engine = restart(tmp_path, llama, prefetch=0.0)
    reads = started_slowly(engine, 0.3)
    output = ask(engine, "b", 1)
    assert engine.wait_prefetch(30)
    counters = engine.tier_stats()["counters"]
    assert counters.prefetched_pages == 1  # placed before the request
    assert counters.hit_tokens == {"disk": len(SYSTEM) - 16}  # the rest handed over to the request's reload...
    assert reads == dict.fromkeys(system_keys(), 1)  # ...each page read from disk once
    assert output.token_ids == cold_output.token_ids
    engine.scheduler.check_integrity()
    engine.close()


def test_an_idle_server_puts_the_prefetched_pages_on_the_device(llama, tmp_path):
    fill(tmp_path, llama)
    engine = restart(tmp_path, llama)
    served = AsyncEngine(engine, None)  # no request: its idle loop alone places the pages
    deadline = time.monotonic() + 30
    while engine.prefetching and time.monotonic() < deadline:
        time.sleep(0.05)
    served.shutdown()
    assert engine.tier_stats()["counters"].prefetched_pages == SYSTEM_PAGES


def test_the_fraction_of_the_pool_bounds_the_prefetch(llama, tmp_path):
    fill(tmp_path, llama)
    engine = restart(tmp_path, llama, prefetch=0.1)  # 10 % of 23 usable pages: 2 pages
    assert engine.wait_prefetch(30)
    assert device_keys(engine) == set(system_keys()[:2])
    engine.close()


def test_prefetch_zero_is_off(llama, tmp_path):
    fill(tmp_path, llama)
    engine = restart(tmp_path, llama, prefetch=0.0)
    assert engine.tiers.prefetcher is None and not engine.prefetching
    assert device_keys(engine) == set()
    ask(engine, "b", 1)
    counters = engine.tier_stats()["counters"]
    assert counters.prefetched_pages == 0 and counters.hit_tokens == {"disk": len(SYSTEM)}
    engine.close()


@pytest.mark.parametrize("bad", [-0.1, 1.5, "on", True])
def test_a_prefetch_fraction_outside_0_to_1_is_refused(bad):
    with pytest.raises(ValueError, match="kv_prefetch"):
        restart_config(kv_prefetch=bad)
