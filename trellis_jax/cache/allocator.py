"""PageAllocator: a fixed pool of KV page ids with O(1) alloc and free.

Contract:
- Pages are the ints ``1 .. num_pages - 1``. Page 0 is the padding sink of the device KV pages
  (padded tokens write there, padded page-table entries point there): it is never handed out.
- ``alloc(n)`` pops ``n`` pages from a free stack (O(n), O(1) per page); ``free(pages)`` pushes them back
  after checking each one is currently allocated (a double free is a ValueError, nothing changes).
- The allocator knows nothing of the radix tree: "allocated" covers pages owned by the tree and pages
  private to requests. ``RadixCache`` splits that count.
- Pure host code, page ids only: there is no device memory here, so the same class drives the
  simulation tools with a pool of any size.
"""

from __future__ import annotations

from collections.abc import Iterable

_FREE = 0
_ALLOCATED = 1


class OutOfPagesError(RuntimeError):
    """Raised when a request for pages cannot be met; the message carries the pool counts."""


class PageAllocator:
    """Free-stack allocator over page ids ``1 .. num_pages - 1`` (page 0 is reserved)."""

    def __init__(self, num_pages: int) -> None:
        if not isinstance(num_pages, int) or num_pages < 2:
            raise ValueError(f"num_pages must be an int >= 2 (page 0 is reserved), got {num_pages!r}")
        self.num_pages = num_pages
        # Reversed so that the first allocations hand out low page ids (easier to read in logs).
        self._free_stack: list[int] = list(range(num_pages - 1, 0, -1))
        self._state = bytearray(num_pages)  # _FREE / _ALLOCATED per page id
        self._state[0] = _ALLOCATED  # page 0 looks allocated so free(0) is rejected

    @property
    def num_free(self) -> int:
        return len(self._free_stack)

    @property
    def num_allocated(self) -> int:
        """Allocated pages, not counting the reserved page 0."""
        return self.num_pages - 1 - len(self._free_stack)

    def is_allocated(self, page_id: int) -> bool:
        """True for a page handed out and not yet freed (False for page 0 and out-of-range ids)."""
        return type(page_id) is int and 0 < page_id < self.num_pages and self._state[page_id] == _ALLOCATED

    def are_allocated(self, pages: list[int]) -> bool:
        """True if every id is an int page currently handed out (one tight loop: hot path)."""
        if not pages:
            return True
        try:  # C-speed: range by min/max, states gathered by map (non-int ids raise TypeError)
            if min(pages) <= 0 or max(pages) >= self.num_pages:
                return False
            return bytes(map(self._state.__getitem__, pages)).count(_ALLOCATED) == len(pages)
        except TypeError:
            return False

    def alloc(self, n: int) -> list[int]:
        """Take ``n`` pages; raises OutOfPagesError (changing nothing) when fewer are free."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"number of pages must be an int >= 0, got {n!r}")
        if n > len(self._free_stack):
            raise OutOfPagesError(f"asked for {n} pages, {len(self._free_stack)} free of {self.num_pages - 1}")
        if n == 0:
            return []
        pages = self._free_stack[: -n - 1 : -1]  # top of the stack first
        del self._free_stack[-n:]
        for page in pages:
            self._state[page] = _ALLOCATED
        return pages

    def free(self, pages: Iterable[int]) -> None:
        """Return pages to the pool; all are checked first so a bad id frees nothing."""
        pages = list(pages)
        self._check_freeable(pages)
        for page in pages:
            self._state[page] = _FREE
        self._free_stack.extend(pages)

    def _check_freeable(self, pages: list[int]) -> None:
        if len(set(pages)) != len(pages):
            raise ValueError(f"duplicate page ids in free(): {sorted(pages)}")
        if not self.are_allocated(pages):
            bad = next(p for p in pages if not self.is_allocated(p))
            raise ValueError(f"page {bad!r} is not an allocated page of this pool (page 0 is reserved)")

    def free_page_ids(self) -> list[int]:
        """A copy of the free stack (for integrity checks and tests)."""
        return list(self._free_stack)
