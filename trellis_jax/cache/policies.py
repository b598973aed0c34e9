"""The built-in eviction policies, registered by name: lru (default), lfu, fifo, mru, slru, priority,
cost_aware. All are ``HeapPolicy`` subclasses; see ``policy.py`` for the interface and complexity.

Metadata they read is kept by the cache on every node: ``last_access`` (logical clock of the last match
or insert through it), ``access_count`` (match hits through it, plus one at creation), ``created``,
``priority`` (max request-supplied priority of inserts through it), ``depth`` and ``num_tokens``.
Ties break by the order the candidate was (re-)queued.
"""

from __future__ import annotations

from trellis_jax.cache.node import TreeNode
from trellis_jax.cache.policy import HeapPolicy, register_policy


@register_policy("lru")
class LRUPolicy(HeapPolicy):
    """Least recently used leaf first."""

    name = "lru"

    def sort_key(self, node: TreeNode):
        return node.last_access


@register_policy("mru")
class MRUPolicy(HeapPolicy):
    """Most recently used leaf first (good for one-pass scans larger than the cache)."""

    name = "mru"

    def sort_key(self, node: TreeNode):
        return -node.last_access


@register_policy("fifo")
class FIFOPolicy(HeapPolicy):
    """Oldest inserted leaf first, whatever its use."""

    name = "fifo"

    def sort_key(self, node: TreeNode):
        return node.created


@register_policy("lfu")
class LFUPolicy(HeapPolicy):
    """Fewest hits first; LRU among equals."""

    name = "lfu"

    def sort_key(self, node: TreeNode):
        return node.access_count, node.last_access


@register_policy("slru")
class SLRUPolicy(HeapPolicy):
    """Segmented LRU: leaves hit once (probationary) go before leaves hit again (protected); LRU inside.

    ``protect_after`` is the access count at which a node enters the protected segment. The segments
    are unbounded (no demotion): a one-shot scan cannot flush prefixes that proved reusable.
    """

    name = "slru"

    def __init__(self, protect_after: int = 2) -> None:
        super().__init__()
        if protect_after < 1:
            raise ValueError(f"protect_after must be >= 1, got {protect_after}")
        self.protect_after = protect_after

    def sort_key(self, node: TreeNode):
        return node.access_count >= self.protect_after, node.last_access


@register_policy("priority")
class PriorityPolicy(HeapPolicy):
    """Lowest request-supplied priority first (``insert(..., priority=p)``); LRU among equals."""

    name = "priority"

    def sort_key(self, node: TreeNode):
        return node.priority, node.last_access


@register_policy("cost_aware")
class CostAwarePolicy(HeapPolicy):
    """GreedyDual-Size over recompute cost per page held.

    Recomputing a page of KV costs its projection/MLP work plus attention over everything before it,
    so a page's cost grows with its position: ``cost = 1 + mid_position / attention_scale`` per page
    (``attention_scale`` ≈ context length at which attention FLOPs equal the rest; 2048 suits small
    Llama-family models). Value ``H = L + cost``; the smallest H is evicted and ``L`` rises to it, so
    cheap cold leaves go first and expensive ones age out instead of pinning the cache forever.
    H is refreshed on insert and access (stateful: uses the hooks, not only a key).
    """

    name = "cost_aware"

    def __init__(self, attention_scale: float = 2048.0) -> None:
        super().__init__()
        if attention_scale <= 0:
            raise ValueError(f"attention_scale must be > 0, got {attention_scale}")
        self.attention_scale = float(attention_scale)
        self.inflation = 0.0

    def recompute_cost_per_page(self, node: TreeNode) -> float:
        mid_position = node.depth - node.num_tokens / 2
        return 1.0 + mid_position / self.attention_scale

    def sort_key(self, node: TreeNode):
        return node.policy_value

    def on_insert(self, node: TreeNode) -> None:
        node.policy_value = self.inflation + self.recompute_cost_per_page(node)

    def on_access(self, node: TreeNode) -> None:
        node.policy_value = self.inflation + self.recompute_cost_per_page(node)
        super().on_access(node)

    def on_evict(self, node: TreeNode, num_pages: int) -> None:
        self.inflation = max(self.inflation, node.policy_value)
