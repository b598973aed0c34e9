"""Reloading demoted pages at admission, and the page moves each step hands the engine (host only, no jax).

With a page store attached, the radix cache demotes the pages it evicts (cache/tiers.py). When a request's
match runs on into demoted pages, `Reloader.reload` asks the cost model whether loading them back is cheaper
than recomputing them; if so it reads them from the store (stopping at the first page the store no longer
holds, which leaves the tree with everything below it), allocates fresh private pages, puts them into the
tree (`RadixCache.reload`) and moves the request's lock to the new end of its path. Their KV goes to the
device before the step that uses them: `take_moves()` returns, once per step, the pages to save (demoted
since the last step: the engine has the runner copy them to the host and puts them into the store before
anything overwrites them) and the pages to load (the engine has the runner write them before the step).

    saves  [Demotion(page_id, key, parent, tokens, namespace, tier), ...]   device -> store
    loads  [(page_id, page), ...]                                          store -> device

Cost model (`ReloadCost`): reload seconds = the fixed cost of a load call + bytes / the tier's store read rate
+ bytes / the host -> device rate; recompute seconds = tokens / prefill tokens/s; a run is reloaded when reloading is faster. Every rate is
measured: the host -> device rate and call cost by the engine at start-up (Runner.page_load_rate), the store read
rate here around every read, the prefill rate by the engine from its steps (engine/tiers.py). The defaults
below only stand until the first measurement.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

from trellis_jax.cache import Demotion, LowerRun, OutOfPagesError, RadixCache

DEFAULT_PREFILL_TOKENS_PER_S = 2000.0  # a 2-core CPU on the small default model, until a step is timed
DEFAULT_H2D_BYTES_PER_S = 2e9
DEFAULT_READ_BYTES_PER_S = {"host": 1e10, "disk": 5e8}
_EMA = 0.2  # weight of a new measurement


@dataclass
class ReloadCost:
    """Reload or recompute: the rates the decision uses, updated by measurements (`observe_*`)."""

    bytes_per_page: int
    prefill_tokens_per_s: float = DEFAULT_PREFILL_TOKENS_PER_S
    h2d_bytes_per_s: float = DEFAULT_H2D_BYTES_PER_S
    load_call_seconds: float = 0.0  # fixed cost of one load (a device call), whatever its size
    read_bytes_per_s: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_READ_BYTES_PER_S))

    def reload_seconds(self, tiers: tuple[str, ...]) -> float:
        read = sum(1.0 / self.read_bytes_per_s.get(tier, DEFAULT_READ_BYTES_PER_S["disk"]) for tier in tiers)
        return self.load_call_seconds + self.bytes_per_page * (read + len(tiers) / self.h2d_bytes_per_s)

    def recompute_seconds(self, num_tokens: int) -> float:
        return num_tokens / self.prefill_tokens_per_s

    def should_reload(self, tiers: tuple[str, ...], num_tokens: int) -> bool:
        return self.reload_seconds(tiers) < self.recompute_seconds(num_tokens)

    def observe_prefill(self, num_tokens: int, seconds: float) -> None:
        if num_tokens > 0 and seconds > 0:
            self.prefill_tokens_per_s = _blend(self.prefill_tokens_per_s, num_tokens / seconds)

    def observe_read(self, tier: str, num_bytes: int, seconds: float) -> None:
        if num_bytes > 0 and seconds > 0:
            self.read_bytes_per_s[tier] = _blend(self.read_bytes_per_s.get(tier), num_bytes / seconds)


def _blend(old: float | None, new: float) -> float:
    return new if old is None else (1 - _EMA) * old + _EMA * new


@dataclass
class TierCounters:
    """Cumulative counts of the lower tiers (pages, tokens, bytes), per tier where a tier applies."""

    hit_tokens: dict[str, int] = field(default_factory=dict)  # prompt tokens reloaded instead of recomputed
    reloaded_pages: dict[str, int] = field(default_factory=dict)
    reloaded_bytes: dict[str, int] = field(default_factory=dict)
    demoted_pages: int = 0  # pages saved to the store (the engine counts them as it puts them)
    demoted_bytes: int = 0
    refused_pages: int = 0  # demoted pages the cost model left to recompute
    missing_pages: int = 0  # pages the store no longer held (or refused as damaged) when reloaded
    store_refused_pages: int = 0  # pages the store would not take (put returned False)
    resaved_pages_skipped: int = 0  # demoted pages not copied again: the store already held their key
    checkpointed_pages: int = 0  # device pages copied to the store while they stay on the device
    prefetched_pages: int = 0  # persisted pages put onto the device at start, before a request asked
    prefetch_refused_pages: int = 0  # ...that the store refused (damaged, missing) when prefetch read them
    prefetch_skipped_pages: int = 0  # ...read but not placed (a request reloaded them first, or no free page)

    def add(self, table: dict[str, int], tier: str, amount: int) -> None:
        table[tier] = table.get(tier, 0) + amount


class PageMoves(NamedTuple):
    """One step's page traffic between the device pool and the store (see the module docstring)."""

    saves: list[Demotion]
    loads: list[tuple[int, object]]

    @property
    def is_empty(self) -> bool:
        return not self.saves and not self.loads


class Reloader:
    """The scheduler's side of the lower tiers: reload decisions at admission and each step's page moves.

    `store`: any object with the kvstore PageStore protocol's `tier`, `get(key)` and `__contains__` (the
    scheduler never imports the stores: they are the engine's). A store of several tiers may also have
    `tier_of(key)`: reloads are then counted under the tier each page came from ("host", "disk"), not under
    the store's one name. `read_ahead(key)`, when set, is asked first: pages already read from the store
    (after a restart, the engine's prefetch hands over those it has read or is about to)."""

    def __init__(self, cache: RadixCache, store, cost: ReloadCost) -> None:
        if not cache.enabled:
            raise ValueError("a page store needs the prefix cache (it holds the demoted pages)")
        self.cache, self.store, self.cost = cache, store, cost
        self.counters = TierCounters()
        self._loads: dict[int, object] = {}  # page id -> page to write before the step (the last one wins)
        self.read_ahead = None  # key -> page or None: asked before the store (a restart's prefetch, engine side)
        cache.enable_tiers(store.tier)

    def reload(self, handle, run: LowerRun | None) -> tuple[object, list[int]]:
        """After a match ending at `handle` (locked by the caller) that `run` continues: reload what the cost
        model says to. Returns the new end of the path (locked; `handle`'s lock released) and the pages
        reloaded into it, or (`handle`, []) when nothing was."""
        if run is None:
            return handle, []
        if not self.cost.should_reload(run.tiers, run.num_tokens):
            self.counters.refused_pages += run.num_pages
            return handle, []
        pages, tiers, lost = self._read(run)
        if not pages and not lost:
            return handle, []  # its first page is still on its way to the store: recompute
        try:
            page_ids = self.cache.alloc_pages(len(pages))
        except OutOfPagesError:
            return handle, []
        end = self.cache.reload(run, page_ids, drop_rest=lost)
        self.cache.lock(end)
        self.cache.unlock(handle)
        for page_id, page, tier in zip(page_ids, pages, tiers):
            self._loads[page_id] = page
            self.counters.add(self.counters.reloaded_pages, tier, 1)
            self.counters.add(self.counters.reloaded_bytes, tier, self.cost.bytes_per_page)
            self.counters.add(self.counters.hit_tokens, tier, self.cache.page_size)
        return end, page_ids

    def _read(self, run: LowerRun) -> tuple[list[object], list[str], bool]:
        """The run's pages from the store up to the first one missing, the tier each came from (a store of
        several tiers says which: `tier_of`), and True if the missing one is lost (not merely still on its
        way: a demotion not yet saved)."""
        pages, tiers, lost, start = [], [], False, time.perf_counter()
        tier_of = getattr(self.store, "tier_of", None)
        for key, tier in zip(run.keys, run.tiers):
            if tier_of is not None:
                tier = tier_of(key) or tier
            page = self.read_ahead(key) if self.read_ahead is not None else None
            if page is None:
                page = self.store.get(key)
            if page is None:
                lost = not self.cache.demotion_pending(key)
                self.counters.missing_pages += lost
                break
            pages.append(page)
            tiers.append(tier)
        if pages:  # the cost model prices a run by the tree's tier names (run.tiers): its rate goes there
            tier = run.tiers[0]
            self.cost.observe_read(tier, len(pages) * self.cost.bytes_per_page, time.perf_counter() - start)
        return pages, tiers, lost

    def take_moves(self) -> PageMoves:
        """This step's saves and loads (each once); call after schedule(), before the step runs."""
        loads, self._loads = list(self._loads.items()), {}
        return PageMoves(self.cache.take_demotions(), loads)

    def prune(self) -> int:
        """Drop demoted tree nodes whose pages the store no longer holds; returns the pages dropped."""
        return self.cache.prune_demoted(self.store.__contains__)
