"""The Prefetcher on its own (engine/prefetch.py), over a restarted radix cache and a recording runner: it
gives up when no device page is free, hands a staged page to a reload, and does not wait for a page far
ahead of its reader."""

from __future__ import annotations

import threading

import numpy as np

from trellis_jax.cache import RadixCache
from trellis_jax.cache.page_keys import chain_key
from trellis_jax.engine import prefetch
from trellis_jax.engine.prefetch import Prefetcher
from trellis_jax.scheduler.reload import TierCounters

PS = 2


class Entry:
    def __init__(self, key, parent, tokens):
        self.key, self.parent, self.tokens, self.namespace = key, parent, tokens, ""


class Runner:
    def __init__(self):
        self.loaded: list[int] = []

    def load_pages(self, page_ids, pages):
        self.loaded += page_ids


def restarted(num_tokens: int, num_pages: int = 16) -> tuple[RadixCache, list[bytes]]:
    """A cache holding one demoted prompt of `num_tokens` tokens (as after a restart); -> (cache, its keys)."""
    cache = RadixCache(num_pages, PS)
    cache.enable_tiers("disk")
    entries, parent = [], None
    for i in range(0, num_tokens, PS):
        tokens = tuple(range(i, i + PS))
        parent = chain_key(parent, tokens, "")
        entries.append(Entry(parent, entries[-1].key if entries else None, tokens))
    cache.rebuild_demoted(entries)
    return cache, [e.key for e in entries]


def prefetcher(cache, read, budget=100) -> tuple[Prefetcher, Runner, TierCounters]:
    runner, counters = Runner(), TierCounters()
    plan = cache.prefetch_plan(budget, lambda key: 0)
    return Prefetcher(cache, runner, plan, read, counters, stack=list), runner, counters


def page(key):
    return np.zeros(4, np.float32)


def test_with_no_free_page_the_rest_is_given_up_and_counted():
    cache, keys = restarted(8, num_pages=3)  # 4 demoted pages, 2 usable device pages
    worker, runner, counters = prefetcher(cache, page)
    assert worker.wait(10)
    assert len(runner.loaded) == 2 and counters.prefetched_pages == 2
    assert counters.prefetch_skipped_pages == 2 and not worker.running
    cache.check_integrity()


def test_a_staged_page_is_handed_to_a_reload_and_not_placed():
    cache, keys = restarted(4)
    worker, runner, counters = prefetcher(cache, page)
    assert worker.take(keys[0]) is not None  # waited for the reader
    assert worker.wait(10)
    assert counters.prefetched_pages == 0 and runner.loaded == []  # its child waits for a parent never placed
    assert counters.prefetch_skipped_pages == 1


def test_a_page_far_ahead_of_the_reader_is_not_waited_for(monkeypatch):
    monkeypatch.setattr(prefetch, "WAIT_AHEAD_PAGES", 1)
    cache, keys = restarted(8)
    gate = threading.Event()
    worker, _, _ = prefetcher(cache, lambda key: gate.wait(10) and page(key))
    assert worker.take(keys[3]) is None  # 3 pages ahead of a reader stuck on the first: read it yourself
    gate.set()
    assert worker.wait(10)


def test_stop_mid_read_places_nothing_more_and_counts_the_rest_skipped():
    cache, keys = restarted(8)
    gate = threading.Event()
    worker, runner, counters = prefetcher(cache, lambda key: gate.wait(10) and page(key))
    threading.Timer(0.2, gate.set).start()  # the page being read arrives after stop() began
    worker.stop()
    worker.turn()
    assert runner.loaded == [] and counters.prefetch_skipped_pages == len(keys)
    assert not worker.running
