"""Eviction policy interface, a lazy-heap base class, and the registry by name.

How the cache drives a policy (the whole interface):
- ``add_candidate(node)`` when a node becomes an unlocked leaf (evictable now);
  ``discard_candidate(node)`` when it stops being one (locked, or it gained a child);
- ``pop_victim() -> node | None`` removes and returns the candidate to evict next;
- hooks, called for every node whatever its candidacy: ``on_insert(node)`` (created),
  ``on_access(node)`` (after the cache refreshed its metadata on a match or insert),
  ``on_split(upper, lower)``, ``on_evict(node, num_pages)`` (before the last ``num_pages`` pages of a
  candidate leave the tree; the whole node when ``num_pages == node.num_pages``);
- with tiers on (tiers.py), ``should_demote(node) -> bool`` right after ``on_evict``: True (the default) keeps
  the victim's pages in the tree as demoted pages (copied to the store), False drops them. Candidates are the
  unlocked device nodes without a device child: demoted children do not keep a node from being evicted.
A stateful policy (ARC-like ghost lists, adaptive segments) keeps its state in these hooks; a simple one
only defines ``sort_key``.

``HeapPolicy`` keeps the candidates in a binary heap with lazy deletion: each candidate maps to the
sequence number of its one live heap entry; stale entries are skipped when popped and the heap is
compacted when stale entries outnumber live ones. Complexity, n = evictable leaves: add / discard /
re-key O(log n) amortized, pop_victim O(log n) amortized, memory O(n). Nothing rebuilds a heap of all
leaves per eviction.
"""

from __future__ import annotations

import heapq
import importlib
import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable

from trellis_jax.cache.node import TreeNode


class EvictionPolicy(ABC):
    """Chooses which unlocked leaf to evict next. See the module docstring for when each method runs."""

    name: str = "abstract"

    @abstractmethod
    def add_candidate(self, node: TreeNode) -> None: ...

    @abstractmethod
    def discard_candidate(self, node: TreeNode) -> None: ...

    @abstractmethod
    def pop_victim(self) -> TreeNode | None: ...

    @abstractmethod
    def is_candidate(self, node: TreeNode) -> bool: ...

    @property
    @abstractmethod
    def num_candidates(self) -> int: ...

    def on_insert(self, node: TreeNode) -> None:
        """A node was created (by insert)."""

    def on_access(self, node: TreeNode) -> None:
        """A node's metadata was refreshed by a match or an insert."""

    def on_split(self, upper: TreeNode, lower: TreeNode) -> None:
        """``lower`` (the original object) was cut; ``upper`` is new and holds its first pages."""

    def on_evict(self, node: TreeNode, num_pages: int) -> None:
        """The last ``num_pages`` pages of ``node`` are about to be evicted."""

    def should_demote(self, node: TreeNode) -> bool:
        """With tiers on: whether the pages ``on_evict`` just announced go to the lower tier (else dropped)."""
        return True


class HeapPolicy(EvictionPolicy):
    """Candidates ordered by ``sort_key`` (smallest evicted first), re-keyed lazily."""

    def __init__(self) -> None:
        self._heap: list[tuple] = []
        self._live: dict[TreeNode, int] = {}  # candidate -> seq of its live heap entry
        self._seq = itertools.count()

    @abstractmethod
    def sort_key(self, node: TreeNode):
        """Orderable value: the smallest is evicted first."""

    def add_candidate(self, node: TreeNode) -> None:
        self._push(node)

    def discard_candidate(self, node: TreeNode) -> None:
        self._live.pop(node, None)

    def is_candidate(self, node: TreeNode) -> bool:
        return node in self._live

    @property
    def num_candidates(self) -> int:
        return len(self._live)

    def pop_victim(self) -> TreeNode | None:
        heap, live = self._heap, self._live
        while heap:
            _, seq, node = heapq.heappop(heap)
            if live.get(node) == seq:
                del live[node]
                return node
        return None

    def on_access(self, node: TreeNode) -> None:
        if node in self._live:
            self._push(node)  # new key; the old entry becomes stale

    def on_split(self, upper: TreeNode, lower: TreeNode) -> None:
        if lower in self._live:
            self._push(lower)

    def _push(self, node: TreeNode) -> None:
        seq = next(self._seq)
        self._live[node] = seq
        heapq.heappush(self._heap, (self.sort_key(node), seq, node))
        if len(self._heap) > 2 * len(self._live) + 64:
            self._compact()

    def _compact(self) -> None:
        live = self._live
        self._heap = [entry for entry in self._heap if live.get(entry[2]) == entry[1]]
        heapq.heapify(self._heap)


_REGISTRY: dict[str, Callable[..., EvictionPolicy]] = {}


def register_policy(name: str, factory: Callable[..., EvictionPolicy] | None = None):
    """Register a policy factory (usually the class) under ``name``; usable as a decorator."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"policy name must be a non-empty str, got {name!r}")

    def register(f: Callable[..., EvictionPolicy]):
        if name in _REGISTRY and _REGISTRY[name] is not f:
            raise ValueError(f"eviction policy {name!r} is already registered")
        _REGISTRY[name] = f
        return f

    return register(factory) if factory is not None else register


def get_policy(policy: str | EvictionPolicy = "lru", **kwargs) -> EvictionPolicy:
    """A fresh policy instance by name (kwargs go to its factory), or ``policy`` itself if an instance.

    ``"package.module:name"`` first imports the module (which registers ``name``): a policy defined
    outside this package works wherever a name is taken, e.g. the server's ``--eviction-policy``.
    """
    if isinstance(policy, EvictionPolicy):
        if kwargs:
            raise ValueError("keyword arguments only apply when the policy is given by name")
        return policy
    if isinstance(policy, str) and policy not in _REGISTRY and ":" in policy:
        policy = _import_policy_module(policy)
    if policy not in _REGISTRY:
        raise ValueError(f"unknown eviction policy {policy!r}; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[policy](**kwargs)


def _import_policy_module(spec: str) -> str:
    """Import the module of ``"package.module:name"``; returns ``name``."""
    module, _, name = spec.partition(":")
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"eviction policy {spec!r}: cannot import module {module!r} ({e})") from None
    return name


def policy_names() -> list[str]:
    return sorted(_REGISTRY)
