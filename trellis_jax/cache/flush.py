"""Flushing the cache: drop every unlocked page of some namespaces (``RadixCache.evict_namespace``).

Unlike eviction, a flush never demotes: its pages leave the tree, and so do the demoted nodes of those
namespaces, so the next requests start cold. Cost O(nodes in the tree): for flushes, not the hot path.
"""

from __future__ import annotations

from collections.abc import Callable

from trellis_jax.cache import eviction, tiers
from trellis_jax.cache.node import SHARED
from trellis_jax.cache.tree import iter_nodes


def owned_by(cache, namespace: str | None) -> Callable[[object], bool]:
    """Predicate on node owners: ``namespace``'s own and those of the namespaces nested under it (None: all)."""
    if namespace is None:
        return lambda node_owner: True
    owner = cache._owner(namespace)
    if owner is SHARED:
        return lambda node_owner: node_owner is SHARED
    nested = namespace + "/"
    return lambda node_owner: node_owner == owner or (isinstance(node_owner, str) and node_owner.startswith(nested))


def evict_namespace(cache, namespace: str | None) -> int:
    """See RadixCache.evict_namespace; returns the device pages freed."""
    owns = owned_by(cache, namespace)
    root = cache._root
    victims = [node for node in iter_nodes(root) if node.is_device_leaf and node.lock_ref == 0 and owns(node.owner)]
    freed = 0
    while victims:
        leaf = victims.pop()
        parent = leaf.parent
        cache._policy.discard_candidate(leaf)
        freed += eviction.free_tail(cache, leaf, len(leaf.pages), demote=False)
        if parent is not root and parent.is_device_leaf and parent.lock_ref == 0 and owns(parent.owner):
            victims.append(parent)
    cache._counters.evicted_pages += freed
    tiers.prune(cache, lambda node: not owns(node.owner))
    return freed
