"""A brute-force oracle for RadixCache and a driver that runs scheduler-like operations against both.

The oracle is a dict ``(owner, prefix tokens) -> page id`` holding every cached whole-page prefix; a
namespace sees its own owner's prefixes plus the shared ones. The driver plays requests the way the
scheduler will (match, lock, alloc, insert, relock, extend, finish) plus probes and evictions, and after
every operation compares the tree's contents with the oracle and runs ``check_integrity()``.
Evictions are policy-dependent, so the oracle does not predict which prefixes go; it checks that the
right number went, that only unlocked whole suffixes went, and then adopts the tree's contents.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trellis_jax.cache import SHARED, OutOfPagesError, RadixCache
from trellis_jax.cache.tree import iter_nodes


def snapshot(cache: RadixCache) -> dict[tuple, int]:
    """Every cached prefix in the tree as ``(owner, prefix tokens) -> page id of its last page``."""
    entries = {}
    for node in iter_nodes(cache._root):
        prefix = _node_prefix(node)
        start = len(prefix) - len(node.key)
        for i, page in enumerate(node.pages):
            entries[(node.owner, prefix[: start + (i + 1) * cache.page_size])] = page
    return entries


def _node_prefix(node) -> tuple:
    parts = []
    while node.parent is not None:
        parts.append(node.key)
        node = node.parent
    return tuple(t for part in reversed(parts) for t in part)


@dataclass
class Request:
    namespace: str
    tokens: list[int]
    handle: object
    tree_pages: list[int]  # pages of the locked cached prefix (from match or insert)
    own_pages: list[int] = field(default_factory=list)  # private pages for the rest

    @property
    def locked_tokens(self) -> int:
        return self.handle.depth if self.handle.parent is not None else 0


class Driver:
    def __init__(
        self, num_pages: int, page_size: int, policy: str, shared: frozenset[str], tiers: bool = False
    ) -> None:
        self.cache = RadixCache(num_pages, page_size, policy=policy, shared_namespaces=shared)
        if tiers:  # eviction demotes; the oracle tracks device pages only (demoted ones are not in snapshot)
            self.cache.enable_tiers("host")
        self.ps = page_size
        self.shared = shared
        self.entries: dict[tuple, int] = {}
        self.requests: list[Request] = []

    # ---- the oracle ----
    def owner(self, ns: str):
        return SHARED if ns in self.shared else ns

    def visible(self, ns: str, tokens) -> list[int]:
        """Pages of the longest whole-page prefix of ``tokens`` visible to ``ns`` (candidates per page)."""
        owner, pages = self.owner(ns), []
        for end in range(self.ps, len(tokens) + 1, self.ps):
            prefix = tuple(tokens[:end])
            page = self.entries.get((owner, prefix), self.entries.get((SHARED, prefix)))
            if page is None or (owner is SHARED and (SHARED, prefix) not in self.entries):
                break
            pages.append(page)
        return pages

    def assert_pages_visible(self, ns: str, tokens, pages: list[int]) -> None:
        owner = self.owner(ns)
        for i, page in enumerate(pages):
            prefix = tuple(tokens[: (i + 1) * self.ps])
            allowed = {self.entries.get((SHARED, prefix))}
            if owner is not SHARED:
                allowed.add(self.entries.get((owner, prefix)))
            assert page in allowed - {None}, f"page {page} at {i} not cached for {ns!r}: {allowed}"

    def check(self) -> None:
        self.cache.check_integrity()
        assert snapshot(self.cache) == self.entries
        private = sum(len(r.own_pages) for r in self.requests)
        assert self.cache.num_private_pages == private, (self.cache.num_private_pages, private)
        assert self.cache.num_locked_pages <= self.cache.num_pages - 1

    def adopt_eviction(self, expected_freed: int) -> None:
        """After an eviction: only unlocked prefixes went, the right number, and the rest is prefix-closed."""
        after = snapshot(self.cache)
        assert all(self.entries.get(k) == v for k, v in after.items()), "eviction invented or moved a prefix"
        assert len(self.entries) - len(after) == expected_freed
        for owner, prefix in after:
            for end in range(self.ps, len(prefix), self.ps):
                assert (owner, prefix[:end]) in after or (SHARED, prefix[:end]) in after, "orphaned suffix"
        for r in self.requests:
            assert len(self.visible_in(after, r.namespace, r.tokens[: r.locked_tokens])) * self.ps == r.locked_tokens
        self.entries = after

    def visible_in(self, entries, ns, tokens):
        saved, self.entries = self.entries, entries
        try:
            return self.visible(ns, tokens)
        finally:
            self.entries = saved

    # ---- operations ----
    def start(self, ns: str, tokens: list[int]) -> None:
        cache = self.cache
        expected = self.visible(ns, tokens)
        m = cache.match(tokens, ns)
        assert m.num_cached_tokens == len(expected) * self.ps
        self.assert_pages_visible(ns, tokens, m.page_ids)
        cache.lock(m.handle)
        need = -(-len(tokens) // self.ps) - len(m.page_ids)
        self._allocate(Request(ns, list(tokens), m.handle, m.page_ids), need)

    def _allocate(self, req: Request, need: int) -> None:
        cache = self.cache
        free, evictable, possible = cache.num_free_pages, cache.num_evictable_pages, cache.can_allocate(need)
        try:
            pages = cache.alloc_pages(need)
        except OutOfPagesError:
            assert not possible and cache.num_free_pages == free and cache.num_evictable_pages == evictable
            self._drop(req)
            return
        assert possible
        self.adopt_eviction(max(0, need - free))
        req.own_pages.extend(pages)
        if req not in self.requests:
            self.requests.append(req)

    def _drop(self, req: Request) -> None:
        self.cache.unlock(req.handle)
        self.cache.free_pages(req.own_pages)
        req.own_pages = []
        if req in self.requests:
            self.requests.remove(req)

    def commit(self, index: int, priority: int | None = None) -> None:
        req = self.requests[index % len(self.requests)]
        full = len(req.tokens) // self.ps
        key = req.tokens[: full * self.ps]
        n_new = full - len(req.tree_pages)
        passed = req.tree_pages + req.own_pages[:n_new]
        expected = self.visible(req.namespace, key)
        r = self.cache.insert(key, passed, req.namespace, priority=priority)
        present = len(expected)
        assert r.num_present_tokens == present * self.ps
        self.assert_pages_visible(req.namespace, key, r.page_ids[:present])
        assert r.page_ids[present:] == passed[present:]
        for i in range(present, full):
            self.entries[(self.owner(req.namespace), tuple(key[: (i + 1) * self.ps]))] = passed[i]
        in_tree = set(self.entries.values())
        for p, q in zip(passed[:present], r.page_ids):
            # A differing tree page is the request's own copy on another visible path: kept, not freed.
            assert p == q or self.cache.allocator.is_allocated(p) == (p in in_tree), f"page {p}: duplicate not freed"
        self.cache.lock(r.handle)
        self.cache.unlock(req.handle)
        req.handle, req.tree_pages, req.own_pages = r.handle, r.page_ids, req.own_pages[max(n_new, 0) :]

    def extend(self, index: int, new_tokens: list[int]) -> None:
        req = self.requests[index % len(self.requests)]
        req.tokens.extend(new_tokens)
        need = -(-len(req.tokens) // self.ps) - len(req.tree_pages) - len(req.own_pages)
        self._allocate(req, max(need, 0))

    def finish(self, index: int) -> None:
        self._drop(self.requests[index % len(self.requests)])

    def probe(self, ns: str, tokens: list[int]) -> None:
        m = self.cache.match(tokens, ns)
        assert m.num_cached_tokens == len(self.visible(ns, tokens)) * self.ps
        self.assert_pages_visible(ns, tokens, m.page_ids)

    def evict(self, n: int) -> None:
        evictable = self.cache.num_evictable_pages
        freed = self.cache.evict(n)
        assert freed == min(n, evictable)
        self.adopt_eviction(freed)

    def reload(self, ns: str, tokens: list[int], count: int, drop_rest: bool) -> None:
        """Match with tiers; reload up to ``count`` of the demoted pages that continue the match."""
        cache = self.cache
        m, run = cache.match_tiers(tokens, ns)
        assert m.num_cached_tokens == len(self.visible(ns, tokens)) * self.ps
        if run is None:
            return
        assert run.num_tokens + m.num_cached_tokens <= len(tokens)
        cache.lock(m.handle)
        n, free = min(count, run.num_pages), cache.num_free_pages
        try:
            pages = cache.alloc_pages(n)
        except OutOfPagesError:
            cache.unlock(m.handle)
            return
        self.adopt_eviction(max(0, n - free))
        cache.reload(run, pages, drop_rest=drop_rest and n < run.num_pages)
        for i, page in enumerate(pages):
            node = cache._page_node[page]
            self.entries[(node.owner, tuple(tokens[: m.num_cached_tokens + (i + 1) * self.ps]))] = page
        cache.unlock(m.handle)
        after = cache.match(tokens, ns)
        assert after.num_cached_tokens >= m.num_cached_tokens + n * self.ps
        assert after.page_ids[len(m.page_ids) : len(m.page_ids) + n] == pages

    def drain(self) -> None:
        """Take the demotions: one per page key, each a whole page whose parent key comes before it."""
        out = self.cache.take_demotions()
        keys = [d.key for d in out]
        assert len(set(keys)) == len(keys) and all(len(d.tokens) == self.ps for d in out)
        assert not any(self.cache.demotion_pending(k) for k in keys)
