"""RadixCache: the RadixAttention prefix cache over page ids (pure host Python, single-threaded).

Keys are token ids at page granularity: only whole pages enter the tree; a running request's partial
last page stays private to it. A later request can still reuse the first tokens of a cached page:
``partial_page`` names the sibling page to copy them from (the scheduler does the copy through the
runner). The scheduler also inserts a finished request's last, partly filled page under a key padded
with -1 (no token id), which a whole-page match never enters and only ``partial_page`` uses. The cache
owns a ``PageAllocator`` (page 0 is the padding sink, never handed out). Every page id is in exactly one
state:

    free       on the allocator's free list
    private    allocated, not in the tree: owned by one request (its uncached suffix, its partial page)
    evictable  in the tree, on a path no request has locked (evict() may free it)
    locked     in the tree, on the path of a held lock (never evicted)
    free + private + evictable + locked == num_pages - 1

Request lifecycle (what the scheduler does, and who owns which pages)::

    m = cache.match(prompt, ns)           pages [0, m.num_cached_tokens) come from the tree
    cache.lock(m.handle)                   ...and stay there while locked
    own = cache.alloc_pages(k)             private pages for the rest (may evict unlocked leaves)
    ... prefill/decode writes KV into `own` ...
    r = cache.insert(full_pages_tokens, m.page_ids + own_full, ns)
    cache.lock(r.handle); cache.unlock(m.handle)
    page_table[:len(r.page_ids)] = r.page_ids       duplicates of `own` were freed by the cache
    ... finish: cache.unlock(r.handle); cache.free_pages(own pages still private, e.g. partial page)

What insert does to the token ranges of one request (P = page_size, | = page boundary)::

    tokens         0 |...........| present |..............| len(key) |...| len(prompt)
    tree before      [ canonical pages   ]
    caller passes    [ same ids or dups  ][ new pages     ]            [partial page]
    after insert     [ tree: dups freed by the cache, new pages owned ] [still private]

Methods (mutation / locking):
- ``match(tokens, namespace="") -> MatchResult(num_cached_tokens, page_ids, handle)``: longest cached
  prefix of whole device pages visible to ``namespace`` (``match_tiers`` also returns the demoted pages that
  continue it: tiers.py). Mutates structure only by splitting the node the match
  ends in (so the handle covers exactly the matched pages) and refreshes access metadata on the path.
  Locks nothing: lock the handle before the next mutating call, or it may be evicted or trimmed.
- ``peek(tokens, namespace="") -> int``: what match would return in tokens; mutates nothing.
- ``partial_page(handle, tokens, namespace="") -> PartialPage(page_id, num_tokens, handle) | None``: after a
  match ending at ``handle``, the tree page whose first tokens continue ``tokens`` furthest into the next
  page (a sibling branch's first page). The caller copies those positions into a private page, locking
  the returned handle until the copy is done; so a request reuses part of a page. Mutates nothing.
- ``lock(handle)`` / ``unlock(handle)``: +1 / -1 reference count on every node from handle to root. The
  root handle (nothing cached) is a no-op. Unlocking below zero or using an evicted handle: ValueError.
- ``insert(tokens, page_ids, namespace="", priority=None) -> InsertResult(num_present_tokens, page_ids,
  handle)``: ``len(tokens)`` must be a multiple of ``page_size`` and ``len(page_ids)`` the page count,
  else ValueError. ``page_ids`` are the tree's canonical pages for the whole key. Passed pages for the
  already-present prefix that differ from the tree's are duplicates: the cache frees them (the caller
  must rewrite its page table). Passed pages for the new suffix become tree-owned (the caller must not
  free them). The returned handle is NOT locked. All pages are validated before anything changes.
- ``alloc_pages(n)``: n private pages, evicting unlocked leaves if needed; OutOfPagesError (with the
  counts) if ``n > free + evictable``, and then nothing changes. ``free_pages(ids)``: private pages back.
- ``can_allocate(n)``; ``evict(num_pages) -> int``: frees up to ``num_pages`` unlocked pages in policy
  order, cascading to parents that become unlocked leaves; a leaf holding more pages than needed loses
  only its tail pages. Returns the pages freed (fewer when not enough are evictable; no error).
- ``evict_namespace(namespace) -> int``: frees every unlocked page of ``namespace`` and of the namespaces
  nested under it (see below), whatever the policy says; other namespaces, the shared trunk and locked
  paths are untouched. Returns the pages freed.
- Lower tiers (demotion, reload, warm restart): tiers.py; a restart's prefetch of demoted pages into free
  pages (``prefetch_plan``, ``place_prefetched``): prefetch.py.
- Counts ``num_free_pages``, ``num_evictable_pages``, ``num_locked_pages``, ``num_private_pages``,
  ``num_pages``; ``stats`` (CacheStats snapshot), ``reset_stats()``, ``check_integrity()``.

Namespaces (tenant / cache_salt): prefixes in different namespaces never match. Namespaces listed in
``shared_namespaces`` all write to one public trunk that every namespace can match as a prefix; what a
tenant inserts after it is private to that tenant (see ``tree.py``). Namespaces nest by "/": ``"t/x"``
is a namespace of its own (it matches nothing of ``"t"``), but ``evict_namespace("t")`` frees it with
``"t"``, so a tenant's flush also reaches the sub-namespaces its requests' cache_salt made.

``enabled=False`` (``--disable-radix-cache``): match always returns 0 cached tokens and the root handle;
insert takes ownership of nothing and frees nothing (num_present_tokens=0, page_ids echoed back): the
caller keeps its pages private and frees them itself with ``free_pages``. Allocation works as usual.

Simulation mode is the normal mode: the cache deals in page ids only, never in device memory, so the
ablation tools run it unchanged with pools of any size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from trellis_jax.cache import eviction, flush, integrity, prefetch, tiers
from trellis_jax.cache.allocator import OutOfPagesError, PageAllocator
from trellis_jax.cache.node import SHARED, TreeNode
from trellis_jax.cache.policy import EvictionPolicy, get_policy
from trellis_jax.cache.stats import CacheStats, Counters
from trellis_jax.cache.tiers import LowerRun
from trellis_jax.cache.tree import (
    best_partial_child,
    longest_match,
    path_pages,
    split,
)
from trellis_jax.cache.validate import check_private, insert_args, is_alternate_copy


class MatchResult(NamedTuple):
    num_cached_tokens: int
    page_ids: list[int]
    handle: TreeNode


class PartialPage(NamedTuple):
    page_id: int  # a tree page whose first num_tokens tokens continue the match
    num_tokens: int  # 1 .. page_size - 1 (or the tokens left, if fewer)
    handle: TreeNode  # the node holding page_id first: lock it while the page is being copied


class InsertResult(NamedTuple):
    num_present_tokens: int
    page_ids: list[int]
    handle: TreeNode


class RadixCache(tiers.TierMethods, prefetch.PrefetchMethods):
    """Prefix cache over ``num_pages`` page ids of ``page_size`` tokens (see the module docstring).

    ``policy``: a registered name (``policy_names()``) or a fresh ``EvictionPolicy`` instance.
    ``shared_namespaces``: names that write to the public trunk every namespace can match.
    ``enabled=False``: the ``--disable-radix-cache`` mode (nothing is ever cached).
    Lower tiers (demotion instead of eviction, reload): ``enable_tiers`` and the methods of tiers.TierMethods.
    """

    def __init__(
        self,
        num_pages: int,
        page_size: int,
        policy: str | EvictionPolicy = "lru",
        shared_namespaces: frozenset[str] = frozenset(),
        enabled: bool = True,
    ) -> None:
        if not isinstance(page_size, int) or page_size < 1:
            raise ValueError(f"page_size must be an int >= 1, got {page_size!r}")
        if isinstance(shared_namespaces, str) or not all(isinstance(ns, str) for ns in shared_namespaces):
            raise ValueError(f"shared_namespaces must hold str names, got {shared_namespaces!r}")
        self.allocator = PageAllocator(num_pages)
        self.page_size = page_size
        self.enabled = enabled
        self.shared_namespaces = frozenset(shared_namespaces)
        self._policy = get_policy(policy)
        if self._policy.num_candidates:
            raise ValueError("this policy instance is already in use by another cache; pass a fresh one")
        self._root = TreeNode((), [], None, None, 0)
        self._page_node: list[TreeNode | None] = [None] * num_pages  # tree page -> node holding it
        self._evictable = 0
        self._locked = 0
        self._logical_locked_tokens = 0
        self._tick = 0
        self._counters = Counters()
        self._tiers: tiers.TierState | None = None  # set by enable_tiers

    def __repr__(self) -> str:
        return (
            f"RadixCache(num_pages={self.num_pages}, page_size={self.page_size}, policy={self._policy.name!r}, "
            f"enabled={self.enabled}, free={self.num_free_pages}, evictable={self._evictable}, "
            f"locked={self._locked}, private={self.num_private_pages})"
        )

    # ---- counts -------------------------------------------------------------------------------
    @property
    def num_pages(self) -> int:
        return self.allocator.num_pages

    @property
    def num_free_pages(self) -> int:
        return self.allocator.num_free

    @property
    def num_evictable_pages(self) -> int:
        return self._evictable

    @property
    def num_locked_pages(self) -> int:
        return self._locked

    @property
    def num_private_pages(self) -> int:
        return self.allocator.num_allocated - self._evictable - self._locked

    @property
    def policy(self) -> EvictionPolicy:
        return self._policy

    def can_allocate(self, n: int) -> bool:
        return n <= self.allocator.num_free + self._evictable

    # ---- match / lock ---------------------------------------------------------------------------
    def match(self, tokens: Sequence[int], namespace: str = "") -> MatchResult:
        """Longest visible cached prefix (whole device pages). Splits the end node; refreshes access. No lock."""
        return self.match_tiers(tokens, namespace)[0]

    def match_tiers(self, tokens: Sequence[int], namespace: str = "") -> tuple[MatchResult, LowerRun | None]:
        """``match``, and the demoted pages that continue it (None: none), which ``reload`` can promote."""
        owner = self._owner(namespace)
        self._counters.match_calls += 1
        key = self._page_key(tokens)
        if not self.enabled or not key:
            self._counters.miss_tokens += len(tokens)
            return MatchResult(0, [], self._root), None
        self._tick += 1
        node, pages_in_node, matched = longest_match(
            self._root, key, owner, self.page_size, bool(self.shared_namespaces), device_only=True
        )
        if pages_in_node < len(node.pages):
            node = self._split(node, pages_in_node)
        run = tiers.continuation(self, node, key, owner) if self._tiers is not None else None
        self._counters.hit_tokens += matched
        self._counters.miss_tokens += len(tokens) - matched
        self._touch(node, hit=True)
        return MatchResult(matched, path_pages(node, len(node.pages)), node), run

    def partial_page(self, handle: TreeNode, tokens: Sequence[int], namespace: str = "") -> PartialPage | None:
        """The cached page that continues a match ending at ``handle`` furthest into its next page.

        ``tokens`` are the tokens ``match`` was given; the match covered ``handle.depth`` of them. Looks at
        the first page of every child of ``handle`` visible to ``namespace`` and returns the one sharing the
        longest prefix with tokens[depth : depth + page_size], or None (no child shares a token, the cache is
        off, or no tokens are left). Whole pages only enter the tree, so this is how a request reuses part of
        a page: the caller copies that page's first num_tokens positions into a private page of its own,
        holding a lock on ``handle`` until the copy is done. Mutates nothing.
        """
        if not self.enabled:
            return None
        if handle is not self._root:
            self._check_alive(handle)
        depth = handle.depth
        want = tuple(tokens[depth : depth + self.page_size])
        found = best_partial_child(handle, want, self._owner(namespace), self.page_size, bool(self.shared_namespaces))
        if found is None:
            return None
        child, length = found
        return PartialPage(child.pages[0], length, child)

    def peek(self, tokens: Sequence[int], namespace: str = "") -> int:
        """Cached tokens ``match`` would return, without mutating anything (no split, access or stats).

        For cache-aware ordering in the scheduler: how much of a waiting prompt is cached right now.
        """
        key = self._page_key(tokens)
        owner = self._owner(namespace)
        if not self.enabled or not key:
            return 0
        return longest_match(self._root, key, owner, self.page_size, bool(self.shared_namespaces), True)[2]

    def lock(self, handle: TreeNode) -> None:
        """Pin the path root..handle: its pages cannot be evicted until the matching unlock."""
        if handle is self._root:
            return
        self._check_alive(handle)
        node = handle
        while node is not self._root:
            if node.lock_ref == 0:
                self._evictable -= len(node.pages)
                self._locked += len(node.pages)
                if node.is_device_leaf:
                    self._policy.discard_candidate(node)
            node.lock_ref += 1
            node = node.parent
        self._logical_locked_tokens += handle.depth

    def unlock(self, handle: TreeNode) -> None:
        """Release one lock taken by ``lock(handle)``; nodes whose count reaches 0 become evictable."""
        if handle is self._root:
            return
        self._check_alive(handle)
        if handle.lock_ref <= 0:
            raise ValueError(f"unlock without a matching lock: {handle!r}")
        self._logical_locked_tokens -= handle.depth
        node = handle
        while node is not self._root:
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self._evictable += len(node.pages)
                self._locked -= len(node.pages)
                if node.is_device_leaf:
                    self._policy.add_candidate(node)
            node = node.parent

    # ---- insert -------------------------------------------------------------------------------
    def insert(
        self, tokens: Sequence[int], page_ids: Sequence[int], namespace: str = "", priority: int | None = None
    ) -> InsertResult:
        """Add whole pages under ``namespace``; frees the caller's duplicates; returns canonical pages."""
        owner = self._owner(namespace)
        key, page_ids = insert_args(tokens, page_ids, self.page_size)
        if not self.enabled or not key:
            self._check_private(page_ids)
            return InsertResult(0, page_ids, self._root)
        self._tick += 1
        ps = self.page_size
        node, pages_in_node, present_tokens = longest_match(
            self._root, key, owner, ps, bool(self.shared_namespaces), device_only=True
        )
        run = None  # demoted pages that continue the device match: the caller's pages for them promote them
        if self._tiers is not None and pages_in_node == len(node.pages):
            run = tiers.continuation(self, node, key, owner, own_only=True)
        present = present_tokens // ps
        canonical = path_pages(node, pages_in_node)
        duplicates = []
        if page_ids[:present] != canonical:  # usual case: the caller passed the pages match gave it
            duplicates = [
                mine
                for i, (mine, tree) in enumerate(zip(page_ids, canonical))
                if mine != tree and not is_alternate_copy(self._page_node, mine, i, key, owner, ps)
            ]
        self._check_private(duplicates + page_ids[present:])
        if pages_in_node < len(node.pages):
            node = self._split(node, pages_in_node)
        if duplicates:
            self.allocator.free(duplicates)
            self._counters.duplicate_pages_freed += len(duplicates)
        if run is not None:
            node = tiers.promote(self, run, page_ids[present : present + run.num_pages], fresh=False)
            canonical, present = canonical + page_ids[present : present + run.num_pages], present + run.num_pages
        if present < len(page_ids):
            node = self._add_leaf(node, key[present * ps :], page_ids[present:], owner, priority)
        self._touch(node, hit=False, priority=priority)
        return InsertResult(present_tokens, canonical + page_ids[len(canonical) :], node)

    def _check_private(self, page_ids: list[int]) -> None:
        check_private(self.allocator, self._page_node, page_ids)

    def _add_leaf(self, parent: TreeNode, key: tuple, pages: list[int], owner, priority: int | None) -> TreeNode:
        if parent is not self._root and parent.is_device_leaf and parent.lock_ref == 0:
            self._policy.discard_candidate(parent)
        leaf = TreeNode(key, pages, owner, parent, self._tick)
        leaf.access_count = 1  # its creation counts as the first use (LFU/SLRU start new nodes at 1)
        leaf.priority = priority if priority is not None else 0
        parent.children[(owner, key[: self.page_size])] = leaf
        for page in pages:
            self._page_node[page] = leaf
        self._evictable += len(pages)
        self._counters.inserted_pages += len(pages)
        self._policy.on_insert(leaf)
        self._policy.add_candidate(leaf)
        return leaf

    # ---- allocation and eviction -----------------------------------------------------------------
    def alloc_pages(self, n: int) -> list[int]:
        """``n`` private pages, evicting unlocked leaves if needed; OutOfPagesError changes nothing."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"number of pages must be an int >= 0, got {n!r}")
        short = n - self.allocator.num_free
        if short > self._evictable:
            raise OutOfPagesError(
                f"cannot allocate {n} pages: {self.allocator.num_free} free, {self._evictable} evictable, "
                f"{self._locked} locked, {self.num_private_pages} private (pool of {self.num_pages - 1})"
            )
        if short > 0:
            eviction.evict(self, short)
        return self.allocator.alloc(n)

    def free_pages(self, page_ids: Sequence[int]) -> None:
        """Return private pages (allocated, not in the tree) to the pool; all checked before any is freed."""
        page_ids = list(page_ids)
        self._check_private(page_ids)
        self.allocator.free(page_ids)

    def evict(self, num_pages: int) -> int:
        """Free up to ``num_pages`` unlocked tree pages in policy order; returns how many were freed.

        Cost O(k log n) amortized for k victim nodes among n evictable leaves (lazy heap, see policy.py).
        """
        if not isinstance(num_pages, int) or num_pages < 0:
            raise ValueError(f"number of pages must be an int >= 0, got {num_pages!r}")
        return eviction.evict(self, num_pages)

    def evict_namespace(self, namespace: str) -> int:
        """Free every unlocked tree page owned by ``namespace`` or a namespace nested under it
        (``namespace + "/..."``); returns how many were freed. A shared namespace means the shared trunk.
        Never demotes: the namespaces' demoted nodes leave the tree too (flush.py); ``flush_all()`` does
        this for every namespace.

        Unlocked leaves of those namespaces go first, then each parent of theirs that became an unlocked leaf
        of them, up to where the namespace's branch hangs off the root or the shared trunk. Locked paths and
        every other namespace keep their pages. Cost O(nodes in the tree): for flushes, not the hot path.
        """
        self._owner(namespace)  # ValueError unless a str
        return flush.evict_namespace(self, namespace)

    def flush_all(self) -> int:
        """``evict_namespace`` for every namespace: free every unlocked page, drop every demoted one."""
        return flush.evict_namespace(self, None)

    # ---- helpers ----------------------------------------------------------------------------------
    def _owner(self, namespace: str):
        if not isinstance(namespace, str):
            raise ValueError(f"namespace must be a str, got {namespace!r}")
        return SHARED if namespace in self.shared_namespaces else namespace

    def _page_key(self, tokens: Sequence[int]) -> tuple:
        full = len(tokens) - len(tokens) % self.page_size
        return tuple(tokens[:full])

    def _split(self, node: TreeNode, num_pages: int) -> TreeNode:
        upper = split(node, num_pages, self.page_size)
        for page in upper.pages:
            self._page_node[page] = upper
        self._policy.on_split(upper, node)
        return upper

    def _touch(self, node: TreeNode, hit: bool, priority: int | None = None) -> None:
        tick, policy = self._tick, self._policy
        while node is not self._root:
            node.last_access = tick
            node.access_count += hit
            if priority is not None and priority > node.priority:
                node.priority = priority
            policy.on_access(node)
            node = node.parent

    def _check_alive(self, handle: TreeNode) -> None:
        # Only roots have no parent, and our own root was handled by the caller: a foreign root is refused.
        if not isinstance(handle, TreeNode) or not handle.alive or handle.parent is None:
            raise ValueError(f"handle was evicted or is not a handle of this cache: {handle!r}")

    # ---- stats and checks -------------------------------------------------------------------------
    @property
    def stats(self) -> CacheStats:
        c = self._counters
        return CacheStats(
            hit_tokens=c.hit_tokens,
            miss_tokens=c.miss_tokens,
            match_calls=c.match_calls,
            inserted_pages=c.inserted_pages,
            duplicate_pages_freed=c.duplicate_pages_freed,
            evicted_pages=c.evicted_pages,
            resident_pages=self._evictable + self._locked,
            evictable_pages=self._evictable,
            locked_pages=self._locked,
            private_pages=self.num_private_pages,
            free_pages=self.num_free_pages,
            locked_logical_tokens=self._logical_locked_tokens,
            page_size=self.page_size,
        )

    def reset_stats(self) -> None:
        """Zero the cumulative counters (gauges are always current)."""
        self._counters = Counters()

    def check_integrity(self) -> None:
        """Recompute every invariant; raises IntegrityError (an AssertionError) with details."""
        integrity.check_integrity(self)
