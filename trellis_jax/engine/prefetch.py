"""Prefetcher: after a warm restart, brings persisted prefixes back onto the device before a request asks.

    start (build_engine, after the tree is rebuilt): plan = cache.prefetch_plan(budget, rank)
    reader thread:  for key in plan: page = read(key)   (the disk store's checked get: crc32 and all)
                    -> staged (bounded: it waits while MAX_STAGED_BYTES are staged and not yet placed)
    engine thread:  turn() between steps (Engine.step, AsyncEngine when idle): the staged pages whose
                    parents are on the device take free pages (cache.place_prefetched) and are written
                    into them (runner.load_pages) before any step reads them

Only the reader touches the store (a thread-safe disk store); only the engine thread touches the tree and
the runner, so a step never sees a page whose node is on the device before its KV was written. A request
that arrives meanwhile matches what is placed and reloads the rest (Reloader), asking `take(key)` first:
a page the reader has staged is handed over, one it is about to read (within WAIT_AHEAD_PAGES of its place)
is waited for, so the two never read the same page; any other page the reload reads itself, and the
reader's later copy is dropped (counted as skipped). A page the store refuses
(damaged, missing) is counted, and the pages below it are not read. When no device page is free, the rest
is given up (skipped): prefetch fills free pages, it never evicts.

Counters (TierCounters): prefetched_pages, prefetch_refused_pages, prefetch_skipped_pages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from trellis_jax.cache.prefetch import PrefetchPlan

log = logging.getLogger(__name__)
MAX_STAGED_BYTES = 256 << 20  # pages read but not yet placed: the reader waits past this
WAIT_AHEAD_PAGES = 64  # take() waits for a page at most this far ahead of the reader, else reads it itself
_WAIT_SLICE_S = 0.05  # wait() wakes at least this often (the reader notifies each page; this is a backstop)


class Prefetcher:
    def __init__(self, cache, runner, plan: PrefetchPlan, read: Callable[[bytes], object], counters, *, stack):
        """`read(key)`: the page (verified) or None; `stack(pages)`: the array runner.load_pages takes."""
        self.cache, self.runner, self.plan, self.counters = cache, runner, plan, counters
        self._read, self._stack = read, stack
        self._staged: dict[bytes, object] = {}
        self._staged_bytes = 0
        self._dead: set[bytes] = set()  # refused or given up: their descendants are not read
        self._index = {key: i for i, key in enumerate(plan.keys)}
        self._position = 0  # the reader has dealt with plan.keys[:_position]
        self._changed = threading.Condition()
        self._stop = False
        self._reading = True  # until the reader has finished (set under the lock: is_alive() lags behind)
        self._thread = threading.Thread(target=self._read_all, name="kv-prefetch", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """True until every planned page was read and placed or dropped."""
        with self._changed:
            return self._reading or bool(self._staged)

    def turn(self) -> int:
        """Engine thread, between steps: place the staged pages that can go now; returns the pages placed."""
        with self._changed:
            staged, finished = dict(self._staged), not self._reading  # finished: nothing more will come
        if not staged:
            return 0
        placed, gone = self.cache.place_prefetched(self.plan, staged.keys())
        if placed:
            self.runner.load_pages([page_id for _, page_id in placed], self._stack([staged[k] for k, _ in placed]))
        out_of_room = self.cache.num_free_pages == 0 and len(placed) < len(staged) - len(gone)
        with self._changed:
            for key in [k for k, _ in placed] + gone:
                self._unstage(key)
            self.counters.prefetched_pages += len(placed)
            self.counters.prefetch_skipped_pages += len(gone)
            if out_of_room:
                self._give_up()
            elif finished:
                self._drop_unplaceable()
            self._changed.notify_all()
        return len(placed)

    def wait(self, timeout: float | None = None) -> bool:
        """Engine thread: read and place everything, waiting for the reader; True when done within `timeout`
        seconds (None: no limit)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            self.turn()
            with self._changed:
                if not self._reading and not self._staged:
                    return True
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(_WAIT_SLICE_S if left is None else min(left, _WAIT_SLICE_S))

    def take(self, key: bytes) -> object | None:
        """Engine thread (a reload): the page for `key` if the reader has staged it or is about to (waited
        for), handed over (it is not placed then); None when it is not planned, refused, or far ahead."""
        with self._changed:
            i = self._index.get(key)
            if i is None or i - self._position > WAIT_AHEAD_PAGES:
                return None
            while self._reading and self._position <= i and self._staged_bytes < MAX_STAGED_BYTES:
                self._changed.wait()  # the reader notifies after every page (and when it ends)
            page = self._staged.get(key)
            self._unstage(key)
            self._changed.notify_all()
            return page

    def stop(self) -> None:
        """Stop reading and drop what is staged (before the store closes). Idempotent."""
        with self._changed:
            self._give_up()
            self._changed.notify_all()
        self._thread.join()  # at most the page being read; it is not staged after this

    # -- reader thread --------------------------------------------------------------------------------
    def _read_all(self) -> None:
        try:
            self._read_plan()
        finally:
            with self._changed:
                self._reading = False
                self._changed.notify_all()

    def _read_plan(self) -> None:
        for key in self.plan.keys:
            with self._changed:
                while not self._stop and self._staged_bytes >= MAX_STAGED_BYTES:
                    self._changed.wait()
                if self._stop:
                    return
                if self.plan.parent[key] in self._dead:
                    self._dead.add(key)
                    self._position = self._index[key] + 1
                    continue
            try:
                page = self._read(key)
            except Exception:  # a store that fails must cost the restart its warm cache, never the engine
                log.exception("kv prefetch: reading page %s failed", key.hex())
                page = None
            with self._changed:
                if self._stop:
                    return  # given up meanwhile: this page was counted then
                if page is None:
                    self._dead.add(key)
                    self.counters.prefetch_refused_pages += 1
                else:
                    self._staged[key] = page
                    self._staged_bytes += page.nbytes if hasattr(page, "nbytes") else 0
                self._position = self._index[key] + 1
                self._changed.notify_all()

    # -- helpers (the caller holds self._changed) ------------------------------------------------------
    def _unstage(self, key: bytes) -> None:
        page = self._staged.pop(key, None)
        if page is not None:
            self._staged_bytes -= page.nbytes if hasattr(page, "nbytes") else 0

    def _give_up(self) -> None:
        """No room (or stopping): drop what is staged, read nothing more; all of it counted as skipped."""
        if self._stop:
            return
        self.counters.prefetch_skipped_pages += len(self._staged) + len(self.plan.keys) - self._position
        self._dead.update(self._staged)
        self._staged.clear()
        self._staged_bytes = 0
        self._stop = True

    def _drop_unplaceable(self) -> None:
        """After the last read and a turn over everything read: a page still waiting has a parent that never
        comes (a safety net: parents are read first, and a refused parent's pages are not read)."""
        self.counters.prefetch_skipped_pages += len(self._staged)
        self._staged.clear()
        self._staged_bytes = 0
