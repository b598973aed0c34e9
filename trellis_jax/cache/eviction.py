"""Eviction inside the radix tree: free (or demote, tiers.py) unlocked device leaves in policy order.

Functions over a RadixCache's private state, as integrity.py; ``RadixCache.evict`` / ``alloc_pages`` and the
flush (flush.py) call them. A victim leaf holding more pages than needed loses only its tail pages.
"""

from __future__ import annotations

from trellis_jax.cache import tiers
from trellis_jax.cache.node import TreeNode


def evict(cache, num_pages: int) -> int:
    """Free up to ``num_pages`` pages of unlocked device leaves in policy order; returns the pages freed."""
    freed = 0
    while freed < num_pages:
        victim = cache._policy.pop_victim()
        if victim is None:
            break
        freed += free_tail(cache, victim, min(len(victim.pages), num_pages - freed))
    cache._counters.evicted_pages += freed
    return freed


def free_tail(cache, leaf: TreeNode, take: int, demote: bool = True) -> int:
    """Free the last ``take`` pages of an unlocked device leaf no longer a policy candidate; they are
    demoted (tiers.py) when tiers are on and ``demote``, else the whole leaf leaves the tree when that is
    all of them. Returns ``take``."""
    cache._policy.on_evict(leaf, take)
    pages = leaf.pages[len(leaf.pages) - take :]
    if demote and tiers.can_demote(cache, leaf, pages):
        tiers.demote_tail(cache, leaf, take)
    elif take < len(leaf.pages):
        _trim_leaf(cache, leaf, take)
    else:
        _remove_leaf(cache, leaf)
    for page in pages:
        cache._page_node[page] = None
    cache.allocator.free(pages)
    cache._evictable -= take
    return take


def _trim_leaf(cache, leaf: TreeNode, num_pages: int) -> None:
    tiers.drop_children(cache, leaf)  # demoted pages after the trimmed ones would lose their prefix
    del leaf.pages[len(leaf.pages) - num_pages :]
    if leaf.page_keys is not None:
        del leaf.page_keys[len(leaf.pages) :]
    leaf.key = leaf.key[: len(leaf.pages) * cache.page_size]
    leaf.depth = leaf.parent.depth + len(leaf.key)
    cache._policy.add_candidate(leaf)


def _remove_leaf(cache, leaf: TreeNode) -> None:
    tiers.drop_children(cache, leaf)
    parent = leaf.parent
    del parent.children[(leaf.owner, leaf.key[: cache.page_size])]
    leaf.alive = False
    leaf.parent = None
    if parent is not cache._root and parent.is_device_leaf and parent.lock_ref == 0:
        cache._policy.add_candidate(parent)
