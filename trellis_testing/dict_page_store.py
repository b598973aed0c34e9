"""DictPageStore: an in-memory test double of the kvstore PageStore protocol (trellis_jax/kvstore/api.py).

Pages are kept as given (numpy arrays, or the FakeRunner's tuples) in insertion order; `capacity_pages`
evicts the oldest past it, as a real store may. `lose(key)` forgets a page behind the tree's back (a store
eviction or a corrupt file), so tests can check the engine recomputes instead of serving it. Counters follow
the protocol's stats() names.
"""

from __future__ import annotations

from collections import OrderedDict


class DictPageStore:
    def __init__(self, tier: str = "host", capacity_pages: int | None = None) -> None:
        self.tier = tier
        self.capacity_pages = capacity_pages
        self._pages: OrderedDict[bytes, tuple[object, object]] = OrderedDict()  # key -> (entry, page)
        self._stats = dict.fromkeys(("hits", "misses", "bytes_read", "bytes_written", "evicted", "refused_corrupt"), 0)
        self.closed = False

    def put(self, entry, page) -> bool:
        if self.closed or self.capacity_pages == 0:
            return False
        if entry.key not in self._pages:
            self._pages[entry.key] = (entry, page)
            self._stats["bytes_written"] += _nbytes(page)
            while self.capacity_pages is not None and len(self._pages) > self.capacity_pages:
                self._pages.popitem(last=False)
                self._stats["evicted"] += 1
        return True

    def get(self, key: bytes):
        found = self._pages.get(key)
        if found is None:
            self._stats["misses"] += 1
            return None
        self._stats["hits"] += 1
        self._stats["bytes_read"] += _nbytes(found[1])
        return found[1]

    def __contains__(self, key: bytes) -> bool:
        return key in self._pages

    def discard(self, key: bytes) -> None:
        self._pages.pop(key, None)

    def lose(self, key: bytes) -> None:
        self.discard(key)

    def entries(self):
        """Parents before children (eviction puts leaves first, so order them here)."""
        known, rest = {None}, [entry for entry, _ in self._pages.values()]
        while rest:
            ready = [e for e in rest if e.parent in known]
            if not ready:
                return  # orphans: their parents were evicted
            yield from ready
            known.update(e.key for e in ready)
            rest = [e for e in rest if e.key not in known]

    def stats(self) -> dict[str, int]:
        return {"pages": len(self._pages), "bytes": sum(_nbytes(p) for _, p in self._pages.values()), **self._stats}

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _nbytes(page) -> int:
    return int(getattr(page, "nbytes", len(page)))
