"""L2: pages in host RAM, in one preallocated numpy slab of page slots, evicted least recently used first.

Why a slab, not a dict of arrays: every page of a model has one shape and dtype, so a slot index is all a key
needs. One allocation of `capacity_bytes` (made at the first put, when the page shape is known; the OS backs
it as slots are first written) holds every page: no allocator churn or fragmentation per demotion, a fixed
footprint the capacity states exactly, and a `put` that is one memcpy into a free or evicted slot.

`get` returns a copy (the slot is reused by a later put). When a put evicts a page, `on_evict(entry, page)`
runs first with a view of the slot, valid only during the call: TieredPageStore uses it to write the page
back to disk. Not thread-safe: one owner thread (TieredPageStore's is the caller's).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator

import numpy as np

from trellis_jax.kvstore.api import PageEntry
from trellis_jax.kvstore.checks import check_put
from trellis_jax.kvstore.order import parents_first

EvictHook = Callable[[PageEntry, np.ndarray], None]


class HostPageStore:
    tier = "host"

    def __init__(self, capacity_bytes: int, *, on_evict: EvictHook | None = None):
        if not isinstance(capacity_bytes, int) or capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be an int >= 0, got {capacity_bytes!r}")
        self.capacity_bytes = capacity_bytes
        self.on_evict = on_evict
        self._slab: np.ndarray | None = None  # [num_slots, *page_shape], allocated by the first put
        self._slots: OrderedDict[bytes, tuple[int, PageEntry]] = OrderedDict()  # least recently used first
        self._free: list[int] = []
        self._page_bytes = 0
        self._closed = False
        self._counts = dict.fromkeys(("hits", "misses", "bytes_read", "bytes_written", "evicted"), 0)

    @property
    def page_bytes(self) -> int:
        """One page's size (0 before the first put)."""
        return self._page_bytes

    def put(self, entry: PageEntry, page: np.ndarray) -> bool:
        """Copy `page` into a slot (the least recently used page's when full). Mutates the slab and the LRU order.

        Raises ValueError when `page` has another shape or dtype than the pages already held."""
        check_put(entry, page)
        if self._closed:
            return False
        if entry.key in self._slots:
            return True
        if self._slab is None:
            self._allocate(page)
        elif page.shape != self._slab.shape[1:] or page.dtype != self._slab.dtype:
            raise ValueError(
                f"page {page.dtype.name}{list(page.shape)} differs from the store's pages "
                f"{self._slab.dtype.name}{list(self._slab.shape[1:])}"
            )
        if not len(self._slab):
            return False  # one page is larger than the capacity
        slot = self._free.pop() if self._free else self._evict_oldest()
        self._slab[slot] = page
        self._slots[entry.key] = (slot, entry)
        self._counts["bytes_written"] += page.nbytes
        return True

    def get(self, key: bytes) -> np.ndarray | None:
        """A copy of the page, now the most recently used; None when absent."""
        held = self._slots.get(key)
        if held is None:
            self._counts["misses"] += 1
            return None
        self._slots.move_to_end(key)
        self._counts["hits"] += 1
        self._counts["bytes_read"] += self.page_bytes
        return self._slab[held[0]].copy()

    def entry(self, key: bytes) -> PageEntry | None:
        held = self._slots.get(key)
        return None if held is None else held[1]

    def __contains__(self, key: bytes) -> bool:
        return key in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def discard(self, key: bytes) -> None:
        """Free `key`'s slot without calling on_evict (the caller forgets the page on purpose)."""
        held = self._slots.pop(key, None)
        if held is not None:
            self._free.append(held[0])

    def entries(self) -> Iterator[PageEntry]:
        return iter(parents_first(entry for _, entry in self._slots.values()))

    def items_oldest_first(self) -> Iterator[tuple[PageEntry, np.ndarray]]:
        """(entry, view of its slot) for every page held, least recently used first; do not put meanwhile."""
        for slot, entry in list(self._slots.values()):
            yield entry, self._slab[slot]

    def stats(self) -> dict[str, int]:
        return {
            "pages": len(self._slots),
            "bytes": len(self._slots) * self.page_bytes,
            **self._counts,
            "refused_corrupt": 0,  # RAM pages are never re-read from a medium that could damage them
            "capacity_bytes": self.capacity_bytes,
            "slots": 0 if self._slab is None else len(self._slab),
        }

    def flush(self) -> None:
        """Nothing to make durable: host RAM does not outlive the process."""

    def close(self) -> None:
        """Forget every page and release the slab; later puts return False."""
        self._closed = True
        self._slots.clear()
        self._free.clear()
        self._slab = None

    def _allocate(self, page: np.ndarray) -> None:
        self._page_bytes = page.nbytes
        num_slots = self.capacity_bytes // page.nbytes if page.nbytes else 0
        self._slab = np.empty((num_slots, *page.shape), dtype=page.dtype)
        self._free = list(range(num_slots - 1, -1, -1))  # pop() hands out slot 0 first

    def _evict_oldest(self) -> int:
        key, (slot, entry) = self._slots.popitem(last=False)
        if self.on_evict is not None:
            self.on_evict(entry, self._slab[slot])
        self._counts["evicted"] += 1
        return slot
