"""Prefixes being computed right now, so a second request waits instead of computing them twice.

Pages are named by a chained hash of their tokens: page k of a sequence is
`hash((namespace, hash of page k-1, tokens of page k))`, so equal hashes mean equal prefixes (up to
a 64-bit collision, which only costs a needless wait of one step). A running request registers the
pages of its prompt it has not computed yet; the scheduler inserts each page into the radix tree as
soon as it is filled and unregisters it then. A waiting request whose first uncached page is
registered by another request is deferred: next step the tree will hold that page.
"""

from __future__ import annotations

from collections import Counter

from trellis_jax.scheduler.request import Request


def extend_page_hashes(request: Request, page_size: int) -> list[int]:
    """Hashes of every full page of request.token_ids (computed incrementally, cached on the request)."""
    hashes = request.page_hashes
    tokens = request.token_ids
    previous = hashes[-1] if hashes else hash(("trellis-page-root", request.namespace))
    for k in range(len(hashes), len(tokens) // page_size):
        previous = hash((previous, tuple(tokens[k * page_size : (k + 1) * page_size])))
        hashes.append(previous)
    return hashes


class InflightPrefixes:
    """Multiset of page hashes that running requests will compute (mutated by register/release)."""

    def __init__(self, page_size: int) -> None:
        self._page_size = page_size
        self._pending: Counter[int] = Counter()
        self._registered: dict[str, list[tuple[int, int]]] = {}  # id -> [(page index, hash)]

    def register(self, request: Request) -> None:
        """Announce the full prompt pages of `request` from its first uncomputed page on."""
        self.release(request)
        hashes = extend_page_hashes(request, self._page_size)
        first = request.num_computed // self._page_size
        last = len(request.prompt_token_ids) // self._page_size
        self._registered[request.request_id] = [(k, hashes[k]) for k in range(first, last)]
        self._pending.update(hashes[first:last])

    def mark_computed(self, request: Request, num_full_pages: int) -> None:
        """Pages below `num_full_pages` of `request` are in the tree now: others may match them."""
        mine = self._registered.get(request.request_id)
        while mine and mine[0][0] < num_full_pages:
            self._drop(mine.pop(0)[1])

    def release(self, request: Request) -> None:
        for _, page_hash in self._registered.pop(request.request_id, []):
            self._drop(page_hash)

    def blocks(self, request: Request, num_cached_tokens: int) -> bool:
        """True if another running request is computing the first page `request` would compute itself."""
        hashes = extend_page_hashes(request, self._page_size)
        next_page = num_cached_tokens // self._page_size
        matchable_pages = (len(request.token_ids) - 1) // self._page_size
        if next_page >= matchable_pages:
            return False
        return hashes[next_page] in self._pending  # waiting requests never register: not our own

    def _drop(self, page_hash: int) -> None:
        self._pending[page_hash] -= 1
        if self._pending[page_hash] <= 0:
            del self._pending[page_hash]
