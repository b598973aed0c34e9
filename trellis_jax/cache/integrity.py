"""check_integrity: recompute every invariant of a RadixCache from scratch and compare.

Checked: page 0 never free nor in the tree; every page in at most one place (free list, one tree node);
free + evictable + locked + private == num_pages - 1; the cache's running counters equal recomputed
ones; node keys, pages, depths, owners and parent/child links consistent; lock_ref >= 0 and a node's
lock_ref >= the sum of its children's (every lock counts along its whole path); the policy's candidates
are exactly the unlocked device leaves (no device child). Demoted nodes (tiers.py): no device page, never
locked, only demoted children, one page key per page, their pages summed in the demoted-pages gauge. Cost
O(nodes + pages): for tests and idle-time checks, not the hot path.
"""

from __future__ import annotations

from trellis_jax.cache.node import SHARED, TreeNode
from trellis_jax.cache.tree import iter_nodes


class IntegrityError(AssertionError):
    """An invariant of the cache does not hold; the message says which and where."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise IntegrityError(message)


def check_integrity(cache) -> None:
    root, ps = cache._root, cache.page_size
    _require(not root.pages and not root.key and root.lock_ref == 0, f"root must be empty and unlocked: {root!r}")
    tree_pages = _check_nodes(cache, root, ps)
    _check_pages(cache, tree_pages)


def _check_nodes(cache, root: TreeNode, ps: int) -> list[int]:
    tree_pages: list[int] = []
    evictable = locked = leaves = demoted = 0
    for node in iter_nodes(root):
        _check_node_shape(node, ps)
        _check_node_links(node, ps)
        if node.tier is not None:
            demoted += _check_demoted(cache, node, ps)
            continue
        tree_pages.extend(node.pages)
        if node.lock_ref:
            locked += len(node.pages)
        else:
            evictable += len(node.pages)
        is_candidate = cache._policy.is_candidate(node)
        should_be = node.lock_ref == 0 and node.is_device_leaf
        leaves += should_be
        _require(is_candidate == should_be, f"policy candidacy {is_candidate}, expected {should_be}: {node!r}")
    _require(
        cache._policy.num_candidates == leaves,
        f"policy holds {cache._policy.num_candidates} candidates, tree has {leaves} unlocked leaves",
    )
    _require(
        evictable == cache.num_evictable_pages, f"evictable: counter {cache.num_evictable_pages}, tree {evictable}"
    )
    _require(locked == cache.num_locked_pages, f"locked: counter {cache.num_locked_pages}, tree {locked}")
    gauge = cache.tier_stats.demoted_pages
    _require(demoted == gauge, f"demoted pages: gauge {gauge}, tree {demoted}")
    return tree_pages


def _check_demoted(cache, node: TreeNode, ps: int) -> int:
    _require(cache.tiers_enabled, f"a demoted node in a cache without tiers: {node!r}")
    _require(not node.pages and node.lock_ref == 0, f"a demoted node holds device pages or a lock: {node!r}")
    _require(len(node.page_keys) * ps == len(node.key), f"demoted node's page keys do not match its key: {node!r}")
    _require(not cache._policy.is_candidate(node), f"a demoted node is an eviction candidate: {node!r}")
    _require(all(c.tier is not None for c in node.children.values()), f"device node below a demoted one: {node!r}")
    return len(node.page_keys)


def _check_node_shape(node: TreeNode, ps: int) -> None:
    _require(node.alive, f"dead node still in the tree: {node!r}")
    _require(node.num_pages > 0 and len(node.key) == node.num_pages * ps, f"key/pages mismatch: {node!r}")
    _require(node.lock_ref >= 0, f"negative lock_ref: {node!r}")
    _require(node.depth == node.parent.depth + len(node.key), f"depth inconsistent with parent: {node!r}")


def _check_node_links(node: TreeNode, ps: int) -> None:
    parent = node.parent
    _require(parent.children.get((node.owner, node.key[:ps])) is node, f"parent does not index child: {node!r}")
    if parent.parent is not None and parent.owner is not SHARED:
        _require(node.owner == parent.owner, f"owner {node.owner!r} below private {parent.owner!r}: {node!r}")
    child_locks = sum(child.lock_ref for child in node.children.values())
    _require(node.lock_ref >= child_locks, f"lock_ref {node.lock_ref} < children's {child_locks}: {node!r}")


def _check_pages(cache, tree_pages: list[int]) -> None:
    allocator = cache.allocator
    free = allocator.free_page_ids()
    _require(0 not in free and 0 not in tree_pages, "page 0 (the padding sink) was handed out")
    _require(len(set(free)) == len(free), "a page is on the free list twice")
    _require(len(set(tree_pages)) == len(tree_pages), "a page is owned by two tree nodes")
    _require(
        not set(free) & set(tree_pages), f"pages both free and in the tree: {sorted(set(free) & set(tree_pages))[:8]}"
    )
    _require(all(allocator.is_allocated(p) for p in tree_pages), "a tree page is not allocated")
    mapped = [page for page, node in enumerate(cache._page_node) if node is not None]
    _require(sorted(mapped) == sorted(tree_pages), "page->node map disagrees with the tree's pages")
    _require(all(page in cache._page_node[page].pages for page in tree_pages), "page->node map points elsewhere")
    total = cache.num_free_pages + cache.num_evictable_pages + cache.num_locked_pages + cache.num_private_pages
    _require(cache.num_private_pages >= 0, f"negative private page count {cache.num_private_pages}")
    _require(
        total == cache.num_pages - 1,
        f"free {cache.num_free_pages} + evictable {cache.num_evictable_pages} + locked {cache.num_locked_pages}"
        f" + private {cache.num_private_pages} = {total} != num_pages - 1 = {cache.num_pages - 1}",
    )
