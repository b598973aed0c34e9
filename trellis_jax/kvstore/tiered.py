"""Host RAM in front of disk: pages evicted from host are written back to disk by a background thread.

    put ──► host (L2) ──evicted──► pending (copies, bounded) ──writer thread──► disk (L3)
    get ◄── host, else pending, else disk (a page found below host is promoted back into host)

The caller never waits on disk in `put`: a demoted page is copied into `pending` and queued (into the buffer
of a page already written when there is one: fresh memory costs page faults). `pending` is bounded
(`max_pending_bytes`): when the disk falls that far behind, a demotion is dropped and counted
(`writeback_dropped`, which also counts pages the disk refused or failed to write), as a cache may drop a
page but must neither grow without bound nor stall the engine.
`write_through=True` also queues every put for disk at once, so a kill -9 loses only the queue, not every
page still in host RAM. `flush()` waits for the queue and makes the disk durable; `close()` writes every host
page down first (a clean stop keeps all of them for the next process), then closes both tiers.

Thread-safety: put/get/discard/entries/stats/flush/close come from one caller thread; the writer thread only
takes queued pages to disk. `stats()` has each tier's counters prefixed (`host_hits`, `disk_hits`...),
`pending_hits`, the write-back counters, and the protocol's totals (`pages` and `bytes` sum the tiers, so a
page held in both counts twice).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator

import numpy as np

from trellis_jax.kvstore.api import PageEntry
from trellis_jax.kvstore.checks import check_put
from trellis_jax.kvstore.disk import DiskPageStore
from trellis_jax.kvstore.host import HostPageStore
from trellis_jax.kvstore.order import parents_first

log = logging.getLogger(__name__)
_STOP = object()


class TieredPageStore:
    tier = "tiered"

    def __init__(
        self,
        host: HostPageStore,
        disk: DiskPageStore | None,
        *,
        write_through: bool = False,
        max_pending_bytes: int = 256 << 20,
    ):
        if host.on_evict is not None:
            raise ValueError("the host store already has an on_evict hook: it belongs to one TieredPageStore")
        if max_pending_bytes < 0:
            raise ValueError(f"max_pending_bytes must be >= 0, got {max_pending_bytes}")
        self.host, self.disk = host, disk
        self.write_through = write_through
        self.max_pending_bytes = max_pending_bytes
        self._pending: dict[bytes, tuple[PageEntry, np.ndarray]] = {}
        self._pending_bytes = 0
        self._spare: list[np.ndarray] = []  # buffers of pages already written, for the next demotions
        self._lock = threading.Lock()  # guards _pending, _pending_bytes, _counts
        self._write_lock = threading.Lock()  # held while one page goes to disk: discard waits for it
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._counts = dict.fromkeys(
            ("hits", "misses", "pending_hits", "writeback_queued", "writeback_written", "writeback_dropped"), 0
        )
        host.on_evict = self._demote
        self._writer = None
        if disk is not None:
            self._writer = threading.Thread(target=self._write_back, name="kvstore-writeback", daemon=True)
            self._writer.start()

    def put(self, entry: PageEntry, page: np.ndarray) -> bool:
        """Into host (evicting its least recently used pages to disk); False when closed or no tier takes it."""
        check_put(entry, page)  # here, not on the writer thread, where a ValueError would reach no caller
        if self._closed:
            return False
        kept = self.host.put(entry, page)
        if self.disk is not None and (self.write_through or not kept):
            kept = self._queue_for_disk(entry, page) or kept
        return kept

    def get(self, key: bytes) -> np.ndarray | None:
        """From the fastest tier holding `key`; a page found in pending or on disk is put back into host."""
        page = self.host.get(key)
        if page is None:
            page = self._from_below(key)
        with self._lock:
            self._counts["hits" if page is not None else "misses"] += 1
        return page

    def __contains__(self, key: bytes) -> bool:
        return key in self.host or key in self._pending or (self.disk is not None and key in self.disk)

    def tier_of(self, key: bytes) -> str | None:
        """The tier a `get(key)` now would read from: "host" (host RAM, or a copy queued for disk: RAM too),
        "disk", or None. Ask before the get, which promotes a page found on disk into host."""
        if key in self.host:
            return "host"
        with self._lock:
            if key in self._pending:
                return "host"
        return "disk" if self.disk is not None and key in self.disk else None

    def entry(self, key: bytes) -> PageEntry | None:
        """What is kept beside `key`'s page, from whichever tier holds it (None when none does)."""
        with self._lock:
            held = self._pending.get(key)
        if held is not None:
            return held[0]
        found = self.host.entry(key)
        return found if found is not None or self.disk is None else self.disk.entry(key)

    def discard(self, key: bytes) -> None:
        with self._write_lock:  # a write of `key` in flight finishes first, so it cannot resurrect the page
            self.host.discard(key)
            with self._lock:
                self._forget_pending(key)
            if self.disk is not None:
                self.disk.discard(key)

    def entries(self) -> Iterator[PageEntry]:
        with self._lock:
            pending = [entry for entry, _ in self._pending.values()]
        below = list(self.disk.entries()) if self.disk is not None else []
        return iter(parents_first([*below, *pending, *self.host.entries()]))

    def stats(self) -> dict[str, int]:
        tiers = {"host": self.host.stats(), **({"disk": self.disk.stats()} if self.disk is not None else {})}
        with self._lock:
            out = {**self._counts, "pending_pages": len(self._pending), "pending_bytes": self._pending_bytes}
        for name, counts in tiers.items():
            out.update({f"{name}_{k}": v for k, v in counts.items()})
        for total in ("pages", "bytes", "bytes_read", "bytes_written", "evicted", "refused_corrupt"):
            out[total] = sum(counts[total] for counts in tiers.values())
        return out

    def flush(self) -> None:
        """Wait until every queued page is on disk, then make it durable."""
        if self.disk is not None:
            self._queue.join()
            self.disk.flush()

    def close(self) -> None:
        """Write every host page down to disk (a clean stop keeps them), flush, stop the writer, close both."""
        if self._closed:
            return
        self._closed = True
        if self.disk is not None:
            for entry, page in self.host.items_oldest_first():  # oldest first: disk evicts those first too
                if entry.key not in self.disk:
                    self._write(entry, page)
            self.flush()
            self._queue.put(_STOP)
            self._writer.join()
            self.disk.close()
        self.host.close()

    # -- write-back -------------------------------------------------------------------------------------------

    def _demote(self, entry: PageEntry, page: np.ndarray) -> None:
        """host's on_evict: queue a copy of the page for disk unless disk has it already."""
        if self.disk is not None and entry.key not in self.disk:
            self._queue_for_disk(entry, page)

    def _queue_for_disk(self, entry: PageEntry, page: np.ndarray) -> bool:
        with self._lock:
            if entry.key in self._pending:
                return True
            if self._pending_bytes + page.nbytes > self.max_pending_bytes:
                self._counts["writeback_dropped"] += 1
                return False
            self._pending[entry.key] = (entry, self._copy_of(page))
            self._pending_bytes += page.nbytes
            self._counts["writeback_queued"] += 1
        self._queue.put(entry.key)
        return True

    def _write_back(self) -> None:
        while (key := self._queue.get()) is not _STOP:
            try:
                with self._write_lock:
                    with self._lock:
                        held = self._pending.get(key)
                    if held is None:
                        continue  # discarded while queued
                    written = self._write(*held)
                    with self._lock:
                        self._counts["writeback_written" if written else "writeback_dropped"] += 1
                        self._forget_pending(key)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _write(self, entry: PageEntry, page: np.ndarray) -> bool:
        try:
            return self.disk.put(entry, page)
        except Exception:  # disk full, directory removed...: the page stays a miss; the writer must live on
            log.exception("kv cache: writing page %s to disk failed", entry.key.hex())
            return False

    def _copy_of(self, page: np.ndarray) -> np.ndarray:
        """`page` copied into a spare buffer: reusing them spares the caller faulting in fresh memory per page."""
        while self._spare:
            buffer = self._spare.pop()
            if buffer.shape == page.shape and buffer.dtype == page.dtype:
                np.copyto(buffer, page)
                return buffer
        return np.array(page, copy=True)

    def _forget_pending(self, key: bytes) -> None:
        held = self._pending.pop(key, None)
        if held is not None:
            self._pending_bytes -= held[1].nbytes
            self._spare.append(held[1])  # at most max_pending_bytes of them: pending and spare never exceed it

    def _from_below(self, key: bytes) -> np.ndarray | None:
        with self._lock:
            held = self._pending.get(key)
            if held is not None:
                self._counts["pending_hits"] += 1
        if held is not None:
            entry, page = held[0], held[1].copy()
        elif self.disk is not None and (entry := self.disk.entry(key)) is not None:
            page = self.disk.get(key)
        else:
            return None
        if page is not None:
            self.host.put(entry, page)
        return page
