"""TierMover: carries the scheduler's page moves out between steps (the radix cache's lower tiers).

Each step, right after schedule() and before the step is run or dispatched:
  1. saves: the runner queues a copy of the pages the cache demoted this step (their ids are free again and
     the step may write them; queued first, the copy reads them as they were), less those the store already
     holds (a page reloaded and demoted again: its key names the same KV);
  2. loads: the runner writes the pages admission reloaded from the store (before the step reads them).
After the step is dispatched, the saved pages are read back (the copy was queued before the step, so this
waits for the copy only) and put into the store, keyed and described by their Demotions. So by the next
schedule() the store holds every page the tree calls demoted, except those it refused (counted; the tree
prunes those nodes now and then).

Checkpoints (`checkpoint()`, when the engine is idle, for a store on disk): the tree's device pages the
store lacks are copied to it and stay on the device, so a process killed later loses only what came after.

Prefetch (`start_prefetch`, a warm restart): the store's persisted pages, rebuilt into the tree as demoted
paths, are read back in the background and put onto free device pages between steps (engine/prefetch.py),
so the first request finds them on the device; `prefetch_turn()` does the engine thread's part.

Measurements for the reload cost model (scheduler/reload.py): the host -> device rate and the fixed cost of
a load call once at start (Runner.page_load_rate), the prefill rate from every synchronous step of at least
`MIN_TIMED_TOKENS` tokens (tokens / wall seconds of run(), an EMA).
"""

from __future__ import annotations

import numpy as np

from trellis_jax.engine.prefetch import Prefetcher
from trellis_jax.kvstore.api import PageEntry
from trellis_jax.scheduler import Scheduler
from trellis_jax.scheduler.reload import PageMoves, ReloadCost
from trellis_jax.step_plan import StepPlan

MIN_TIMED_TOKENS = 64  # smaller steps are dominated by per-step overheads, not prefill compute
PRUNE_EVERY_STEPS = 256


class TierMover:
    def __init__(
        self, scheduler: Scheduler, runner, store, *, bytes_per_page: int, measure: bool = True, checkpoint=False
    ) -> None:
        """Attach `store` (a kvstore PageStore) to `scheduler`; `measure`: compile the runner's page copies and
        time the host -> device rate now; `checkpoint`: `checkpoint()` copies device pages (a store that
        outlives the process: so a kill -9 loses less), else it does nothing."""
        self.store, self.runner, self.checkpoints = store, runner, checkpoint
        self.cost = ReloadCost(bytes_per_page)
        if measure:
            if hasattr(runner, "warmup_page_io"):
                runner.warmup_page_io()
            self.cost.load_call_seconds, self.cost.h2d_bytes_per_s = runner.page_load_rate()
        self.reloader = scheduler.attach_store(store, self.cost)
        self.counters = self.reloader.counters
        self.prefetcher: Prefetcher | None = None
        self._steps = 0

    def rebuild(self) -> int:
        """Warm restart: the store's pages become demoted tree paths (namespaces kept); returns the pages."""
        return self.reloader.cache.rebuild_demoted(self.store.entries())

    def start_prefetch(self, budget_pages: int, read, keys_by_recency: list[bytes] = ()) -> int:
        """Start reading up to `budget_pages` demoted pages back in the background, most recently used branches
        first (`keys_by_recency`: least recent first; `read(key)`: a thread-safe, checked read of the store
        that holds them); returns the pages planned. Call once, after `rebuild`."""
        if self.prefetcher is not None:
            raise ValueError("prefetch already started")
        rank = {key: i for i, key in enumerate(keys_by_recency)}
        plan = self.reloader.cache.prefetch_plan(budget_pages, lambda key: rank.get(key, -1))
        if plan.keys:
            self.prefetcher = Prefetcher(self.reloader.cache, self.runner, plan, read, self.counters, stack=_stack)
            self.reloader.read_ahead = self.prefetcher.take  # a request's reload waits for pages in flight
        return len(plan.keys)

    def prefetch_turn(self) -> bool:
        """Between steps: put the prefetched pages that arrived onto the device; True while prefetch goes on."""
        if self.prefetcher is None:
            return False
        self.prefetcher.turn()
        return self.prefetcher.running

    def wait_prefetch(self, timeout: float | None = None) -> bool:
        """Between steps: wait until every prefetched page is on the device (or dropped); False on timeout."""
        return self.prefetcher is None or self.prefetcher.wait(timeout)

    def persist(self) -> int:
        """Clean stop: demote every unlocked device page of the tree (eviction with tiers on), put those the
        store does not hold yet, then flush and close the store (a TieredPageStore writes its host pages to
        disk), so a restart on the same store rebuilds them. Returns the pages put. Call once, with no step
        in flight that still writes those pages (the runner's copy is queued after any dispatched step)."""
        if self.prefetcher is not None:
            self.prefetcher.stop()  # its pages are on disk already; it must not read a closing store
            self.reloader.read_ahead = None
        cache = self.reloader.cache
        cache.evict(cache.num_evictable_pages)
        before = self.counters.demoted_pages
        self.after_dispatch(self.before_step(self.reloader.take_moves()))
        self.store.flush()
        self.store.close()
        return self.counters.demoted_pages - before

    def checkpoint(self) -> int:
        """Between steps (the engine idle): copy the tree's device pages the store does not hold yet into it,
        leaving them on the device; returns the pages put. Nothing unless built with checkpoint=True."""
        if not self.checkpoints:
            return 0
        copies = self.reloader.cache.unsaved_pages(self.store.__contains__)
        if not copies:
            return 0
        put = 0
        for copy, page in zip(copies, self.runner.save_pages([c.page_id for c in copies]).fetch()):
            put += bool(self.store.put(PageEntry(copy.key, copy.parent, copy.tokens, copy.namespace), page))
        self.counters.checkpointed_pages += put
        self.counters.store_refused_pages += len(copies) - put
        return put

    def before_step(self, moves: PageMoves | None):
        """Queue this step's saves and loads on the runner; returns what `after_dispatch` takes."""
        if moves is None or moves.is_empty:
            return None
        saves = [d for d in moves.saves if d.key not in self.store]  # a page reloaded, then demoted again
        self.counters.resaved_pages_skipped += len(moves.saves) - len(saves)
        read = self.runner.save_pages([d.page_id for d in saves]) if saves else None
        if moves.loads:
            self.runner.load_pages([page_id for page_id, _ in moves.loads], _stack([page for _, page in moves.loads]))
        return saves, read

    def after_dispatch(self, pending) -> None:
        """Put the saved pages into the store (waits for their copy, queued before the step)."""
        self._steps += 1
        if pending is not None and pending[1] is not None:
            saves, read = pending
            for demotion, page in zip(saves, read.fetch()):
                entry = PageEntry(demotion.key, demotion.parent, demotion.tokens, demotion.namespace)
                if self.store.put(entry, page):
                    self.counters.demoted_pages += 1
                    self.counters.demoted_bytes += self.cost.bytes_per_page
                else:
                    self.counters.store_refused_pages += 1
        if self._steps % PRUNE_EVERY_STEPS == 0:
            self.reloader.prune()  # nodes whose pages the store evicted or refused

    def observe_step(self, plan: StepPlan, seconds: float) -> None:
        if plan.num_tokens >= MIN_TIMED_TOKENS:
            self.cost.observe_prefill(plan.num_tokens, seconds)

    def stats(self) -> dict[str, object]:
        """The tier counters, the tree's tier gauges and the store's own stats, for the engine's stats."""
        tree = self.reloader.cache.tier_stats
        return {
            "tier": tree.tier,
            "demoted_pages_in_tree": tree.demoted_pages,
            "counters": self.counters,
            "store": self.store.stats(),
            "prefill_tokens_per_s": self.cost.prefill_tokens_per_s,
            "h2d_bytes_per_s": self.cost.h2d_bytes_per_s,
        }


def _stack(pages: list):
    """One array of pages for the runner (numpy pages stacked; the fake runner's tuples passed as a list)."""
    return np.stack(pages) if hasattr(pages[0], "shape") else pages
