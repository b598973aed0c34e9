"""The radix tree's lower tiers: demoting evicted pages to a page store, and promoting them back.

With tiers enabled (``RadixCache.enable_tiers(tier)``), eviction demotes instead of dropping: the evicted
node stays in the tree with ``tier`` set and its chained page keys (page_keys.py), its device pages go back to
the allocator, and a ``Demotion`` per page waits in the outbox until the caller takes it
(``take_demotions``) and has the runner copy those pages' KV to the store before anything overwrites them.
A match that runs into demoted nodes reports them (``LowerRun``); the caller reloads their pages from the
store into fresh private pages and ``reload`` puts those into the nodes, which are device nodes again. An
insert whose path runs into demoted nodes promotes them with the caller's (recomputed) pages alike.

    device path      [ root ... handle ]                       locked by the request
    demoted below    [ handle ][ n1 (host) ][ n2 (disk) ]...     LowerRun(nodes=(n1, n2), keys, tiers)
    after reload     [ root ... handle ][ n1 ][ n2' ]            n2 split where the reload stopped

Invariants (integrity.py checks them): a demoted node holds no device page, is never locked and only has
demoted descendants; its ``page_keys`` hold one key per page; the policy's candidates are the unlocked
device nodes without a device child. What is not demoted: pages whose key holds a negative token (a cached
tail page's padding), pages reloaded since the last ``take_demotions`` (their KV is written by the step that
follows, so there is nothing to copy yet), and nodes the policy's ``should_demote`` declines. A flush drops.

Pure host code over TreeNode and the cache's private state (as integrity.py); no store, no jax, no numpy:
the store is the caller's (the scheduler asks it, the engine fills it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from trellis_jax.cache.node import SHARED, TreeNode
from trellis_jax.cache.page_keys import chain_key
from trellis_jax.cache.tree import iter_nodes, longest_match
from trellis_jax.cache.validate import check_private


class Demotion(NamedTuple):
    """One device page leaving for the store: the runner reads ``page_id`` before the next step writes it."""

    page_id: int
    key: bytes
    parent: bytes | None  # None: a prompt's first page
    tokens: tuple[int, ...]
    namespace: str
    tier: str


class LowerRun(NamedTuple):
    """The demoted pages that continue a match, top-down: ``nodes`` (the last one may be matched only in
    part), one key and one tier per matched page."""

    nodes: tuple[TreeNode, ...]
    keys: tuple[bytes, ...]
    tiers: tuple[str, ...]
    page_size: int

    @property
    def num_pages(self) -> int:
        return len(self.keys)

    @property
    def num_tokens(self) -> int:
        return len(self.keys) * self.page_size


class TierState:
    """What the cache keeps for its lower tiers: counters, the outbox, the pages reloaded this step."""

    def __init__(self, tier: str, key_namespace_of_shared: str) -> None:
        self.tier = tier
        self.shared_namespace = key_namespace_of_shared
        self.outbox: dict[bytes, Demotion] = {}
        self.fresh: set[int] = set()
        self.demoted_pages = 0  # gauge: pages in demoted nodes
        self.num_demoted = 0  # counters: pages demoted, promoted back (reload or recompute), dropped
        self.num_promoted = 0
        self.num_dropped = 0


# ---- keys -------------------------------------------------------------------------------------------
def key_namespace(cache, owner) -> str:
    """The namespace a node's page keys are chained under (the shared trunk's: one of its names)."""
    return cache._tiers.shared_namespace if owner is SHARED else owner


def node_keys(cache, node: TreeNode) -> list[bytes]:
    """The node's page keys, computed (and memoized) with those of its ancestors where missing."""
    chain, above = [], node
    while above.parent is not None and above.page_keys is None:
        chain.append(above)
        above = above.parent
    parent = above.page_keys[-1] if above.parent is not None else None
    ps = cache.page_size
    for n in reversed(chain):
        namespace, keys = key_namespace(cache, n.owner), []
        for i in range(len(n.key) // ps):
            parent = chain_key(parent, n.key[i * ps : (i + 1) * ps], namespace)
            keys.append(parent)
        n.page_keys = keys
    return node.page_keys


def parent_key(cache, node: TreeNode) -> bytes | None:
    return node_keys(cache, node.parent)[-1] if node.parent.parent is not None else None


# ---- demotion ---------------------------------------------------------------------------------------
def can_demote(cache, leaf: TreeNode, pages: list[int]) -> bool:
    """Whether the last ``len(pages)`` pages of ``leaf`` (an unlocked device leaf) go to the store."""
    state = cache._tiers
    if state is None or not cache._policy.should_demote(leaf):
        return False
    tail = leaf.key[len(leaf.key) - len(pages) * cache.page_size :]
    return min(tail) >= 0 and not state.fresh.intersection(pages)


def demote_tail(cache, leaf: TreeNode, take: int) -> None:
    """Demote the last ``take`` pages of ``leaf`` (split off first when it has more): they stay in the tree
    as a demoted node, their Demotions go to the outbox. The caller frees the device pages."""
    state, ps = cache._tiers, cache.page_size
    if take < len(leaf.pages):
        cache._split(leaf, len(leaf.pages) - take)  # the original object keeps the tail
    keys, namespace = node_keys(cache, leaf), key_namespace(cache, leaf.owner)
    parent = parent_key(cache, leaf)
    for i, (page, key) in enumerate(zip(leaf.pages, keys)):
        state.outbox[key] = Demotion(page, key, parent, leaf.key[i * ps : (i + 1) * ps], namespace, state.tier)
        parent = key
    leaf.pages = []
    leaf.tier = state.tier
    state.demoted_pages += take
    state.num_demoted += take
    upper = leaf.parent
    if upper.parent is not None and upper.lock_ref == 0 and upper.is_device_leaf:
        cache._policy.add_candidate(upper)


def unsaved_pages(cache, holds: Callable[[bytes], bool]) -> list[Demotion]:
    """Copies of device pages to checkpoint: every whole page of the tree's device nodes (a padded tail page
    and those after it excluded, as for demotion) whose key ``holds`` is False, parents first. Nothing
    changes in the tree: the pages stay on the device."""
    state, ps, out = cache._tiers, cache.page_size, []
    for node in iter_nodes(cache._root):
        if node.tier is not None or not node.pages or not cache._policy.should_demote(node):
            continue
        keys, namespace, parent = node_keys(cache, node), key_namespace(cache, node.owner), parent_key(cache, node)
        for i, (page, key) in enumerate(zip(node.pages, keys)):
            tokens = node.key[i * ps : (i + 1) * ps]
            if min(tokens) < 0:
                break
            if not holds(key):
                out.append(Demotion(page, key, parent, tokens, namespace, state.tier))
            parent = key
    return out


def take_demotions(cache) -> list[Demotion]:
    """The Demotions since the last call (in eviction order); clears the outbox and the reloaded-page set."""
    state = cache._tiers
    if state is None:
        return []
    out = list(state.outbox.values())
    state.outbox.clear()
    state.fresh.clear()
    return out


# ---- match and promotion ----------------------------------------------------------------------------
def device_end(node: TreeNode) -> TreeNode:
    """The deepest device node on the path root..node (the root if none)."""
    while node.tier is not None:
        node = node.parent
    return node


def continuation(cache, node: TreeNode, key: tuple, owner, own_only: bool = False) -> LowerRun | None:
    """The demoted pages that continue a device match ending at the end of ``node`` (``key[:node.depth]``
    matched), or None. Visible as in tree.py: the owner's nodes, and shared ones while the path is shared;
    ``own_only`` (an insert: a tenant's pages never become the shared trunk's): the owner's nodes only."""
    pos, ps = node.depth, cache.page_size
    if pos >= len(key) or not node.children:
        return None
    has_shared = bool(cache.shared_namespaces) and not own_only
    end, pages_in_end, matched = longest_match(node, key[pos:], owner, ps, has_shared)
    if matched == 0 or end.tier is None or device_end(end) is not node:
        return None
    return lower_run(cache, end, pages_in_end)


def lower_run(cache, end: TreeNode, pages_in_end: int) -> LowerRun:
    """The demoted part of a match ending ``pages_in_end`` pages into ``end`` (a demoted node)."""
    nodes, node = [], end
    while node.tier is not None:
        nodes.append(node)
        node = node.parent
    nodes.reverse()
    keys, tiers = [], []
    for n in nodes:
        count = pages_in_end if n is end else n.num_pages
        keys += n.page_keys[:count]
        tiers += [n.tier] * count
    return LowerRun(tuple(nodes), tuple(keys), tuple(tiers), cache.page_size)


def check_run(cache, run: LowerRun, page_ids: list[int]) -> None:
    """ValueError unless ``run`` still hangs demoted below a device node and ``page_ids`` are private pages
    for a prefix of it."""
    first = run.nodes[0] if run.nodes else None
    if first is None or not first.alive or first.parent is None or first.parent.tier is not None:
        raise ValueError("the demoted run no longer hangs below a device node (stale LowerRun)")
    if any(not n.alive or n.tier is None for n in run.nodes):
        raise ValueError("a node of the demoted run was dropped or promoted since the match")
    if len(page_ids) > run.num_pages:
        raise ValueError(f"{len(page_ids)} pages for a run of {run.num_pages} demoted pages")
    check_private(cache.allocator, cache._page_node, page_ids)


def promote(cache, run: LowerRun, page_ids: list[int], fresh: bool, drop_rest: bool = False) -> TreeNode:
    """Put ``page_ids`` (checked private) into the first ``len(page_ids)`` pages of ``run``; returns the new
    device end of the path. ``fresh``: their KV is written by the coming step (reload), not yet there.
    ``drop_rest``: the page after them is lost (not in the store): drop its node and everything below."""
    done, end, rest = 0, run.nodes[0].parent, None
    for n in run.nodes:
        if done == len(page_ids):
            rest = n
            break
        take = min(n.num_pages, len(page_ids) - done)
        end = cache._split(n, take) if take < n.num_pages else n
        _promote_node(cache, end, page_ids[done : done + take], fresh)
        done += take
        if end is not n:
            rest = n  # the original object kept the pages after the split
            break
    if drop_rest and rest is not None:
        drop_subtree(cache, rest)
    return end


def _promote_node(cache, node: TreeNode, pages: list[int], fresh: bool) -> None:
    state, parent = cache._tiers, node.parent
    if parent.parent is not None and parent.lock_ref == 0 and parent.is_device_leaf:
        cache._policy.discard_candidate(parent)
    node.pages, node.tier = list(pages), None
    for page in pages:
        cache._page_node[page] = node
    if fresh:
        state.fresh.update(pages)
    cache._evictable += len(pages)
    state.demoted_pages -= len(pages)
    state.num_promoted += len(pages)
    node.last_access = cache._tick
    cache._policy.on_insert(node)
    if node.is_device_leaf:
        cache._policy.add_candidate(node)


# ---- dropping ---------------------------------------------------------------------------------------
def drop_subtree(cache, node: TreeNode) -> None:
    """Remove a demoted node and everything below it (all demoted) from the tree."""
    del node.parent.children[(node.owner, node.key[: cache.page_size])]
    for n in [node, *iter_nodes(node)]:
        cache._tiers.demoted_pages -= n.num_pages
        cache._tiers.num_dropped += n.num_pages
        n.alive = False
    node.parent = None


def drop_children(cache, node: TreeNode) -> None:
    """Drop every (demoted) child of a device node that loses pages or leaves the tree."""
    for child in list(node.children.values()):
        drop_subtree(cache, child)


def prune(cache, keep: Callable[[TreeNode], bool]) -> int:
    """Drop every demoted node for which ``keep(node)`` is False, with its subtree; returns pages dropped."""
    if cache._tiers is None:
        return 0
    before = cache._tiers.num_dropped
    stack = list(cache._root.children.values())
    while stack:
        node = stack.pop()
        if node.tier is not None and not keep(node):
            drop_subtree(cache, node)
        else:
            stack.extend(node.children.values())
    return cache._tiers.num_dropped - before


# ---- warm restart -----------------------------------------------------------------------------------
def rebuild(cache, entries: Iterable) -> int:
    """Demoted tree paths from a store's entries (parents before children; objects with key, parent, tokens,
    namespace); an entry whose key does not chain from its fields, whose parent is unknown or whose tokens are
    not one page is skipped. Returns the pages added."""
    ps, state = cache.page_size, cache._tiers
    where: dict[bytes, TreeNode] = {}  # key -> the demoted node holding that page
    added = 0
    for e in entries:
        tokens = tuple(e.tokens)
        if len(tokens) != ps or min(tokens) < 0 or chain_key(e.parent, tokens, e.namespace) != e.key:
            continue
        parent = cache._root if e.parent is None else where.get(e.parent)
        owner = SHARED if e.namespace in cache.shared_namespaces else e.namespace
        if parent is None or e.key in where:
            continue
        if parent.parent is not None and parent.page_keys[-1] != e.parent:  # a branch after a middle page
            upper = cache._split(parent, parent.page_keys.index(e.parent) + 1)
            where.update(dict.fromkeys(upper.page_keys, upper))
            parent = upper
        if (owner, tokens) in parent.children:
            continue  # already in the tree (a device page, or the same page twice)
        if parent.parent is not None and not parent.children and parent.owner == owner:
            parent.key += tokens  # the path goes on: extend the node (its first page, its index, is unchanged)
            parent.page_keys.append(e.key)
            parent.depth += ps
            node = parent
        else:
            node = TreeNode(tokens, [], owner, parent, cache._tick)
            node.tier, node.page_keys = state.tier, [e.key]
            parent.children[(owner, tokens)] = node
        where[e.key] = node
        state.demoted_pages += 1
        added += 1
    return added


# ---- the cache's public tier methods ----------------------------------------------------------------
class TierStats(NamedTuple):
    """Counters since ``enable_tiers`` (pages) and the demoted pages in the tree now."""

    tier: str | None  # None: tiers are off
    demoted_pages: int  # gauge
    demotions: int
    promotions: int  # demoted pages made device pages again (reload, or an insert that recomputed them)
    dropped: int  # demoted pages that left the tree (pruned, lost from the store, flushed)


class TierMethods:
    """RadixCache's lower-tier methods (a mixin over its state; see the module docstring)."""

    def enable_tiers(self, tier: str = "host") -> None:
        """From now on eviction demotes (``tier``: the store's name for where it keeps pages: "host", "disk"...)."""
        if not isinstance(tier, str) or not tier:
            raise ValueError(f"tier must be a store's tier name such as 'host' or 'disk', got {tier!r}")
        if not self.enabled:
            raise ValueError("a disabled prefix cache (--disable-radix-cache) has no tiers")
        if self._tiers is None:
            shared = min(self.shared_namespaces) if self.shared_namespaces else ""
            self._tiers = TierState(tier, shared)
        self._tiers.tier = tier

    @property
    def tiers_enabled(self) -> bool:
        return self._tiers is not None

    @property
    def tier_stats(self) -> TierStats:
        s = self._tiers
        if s is None:
            return TierStats(None, 0, 0, 0, 0)
        return TierStats(s.tier, s.demoted_pages, s.num_demoted, s.num_promoted, s.num_dropped)

    def reload(self, run: LowerRun, page_ids: list[int], drop_rest: bool = False) -> TreeNode:
        """Make the first ``len(page_ids)`` demoted pages of ``run`` (from ``match_tiers``) device pages held
        in ``page_ids`` (private pages the caller allocated, the KV of which the coming step writes from the
        store); returns the new end node of the path (not locked). ``drop_rest``: the next page of the run
        was not found in the store: it and everything below leave the tree. Mutates; the caller holds a lock
        on the node the run hangs below (so allocating the pages could not evict it). ValueError (nothing
        changed) for a stale run or pages that are not private."""
        page_ids = list(page_ids)
        check_run(self, run, page_ids)
        self._tick += 1
        return promote(self, run, page_ids, fresh=True, drop_rest=drop_rest)

    def take_demotions(self) -> list[Demotion]:
        """Pages demoted since the last call: the caller copies each page's KV to the store before any step
        writes the page again (its id is free now). Also ends the "reloaded this step" marks (tiers.py)."""
        return take_demotions(self)

    def unsaved_pages(self, holds: Callable[[bytes], bool]) -> list[Demotion]:
        """Device pages to copy to the store now (a checkpoint; tiers.unsaved_pages): the tree's whole device
        pages whose key ``holds`` is False, parents first. Read only; nothing locked needed (between steps)."""
        if self._tiers is None:
            raise ValueError("enable_tiers first: a checkpoint copies pages to the tiers' store")
        return unsaved_pages(self, holds)

    def demotion_pending(self, key: bytes) -> bool:
        """Whether a demoted page's KV is still on its way to the store (not taken yet)."""
        return self._tiers is not None and key in self._tiers.outbox

    def prune_demoted(self, holds: Callable[[bytes], bool]) -> int:
        """Drop the demoted nodes (with their subtrees) holding a page key for which ``holds`` is False and
        which is not on its way (``demotion_pending``); returns the pages dropped."""
        outbox = self._tiers.outbox if self._tiers is not None else {}
        return prune(self, lambda node: all(k in outbox or holds(k) for k in node.page_keys))

    def rebuild_demoted(self, entries: Iterable) -> int:
        """Warm restart: demoted paths from a store's entries (tiers.rebuild); returns the pages added."""
        if self._tiers is None:
            raise ValueError("enable_tiers first: rebuilt pages are demoted pages")
        return rebuild(self, entries)
