"""Prefetch of demoted pages onto the device before any request asks for them (a warm restart's first request).

After a restart every persisted page is a demoted tree node (tiers.rebuild). ``plan_prefetch`` picks which
of them to bring back while the engine is idle: whole branches, the most recently used first (``rank``: a
higher rank is more recent), at most ``budget`` pages, parents before children, so every page of the plan
can go onto the device once the pages above it are there. ``place_prefetched`` then turns the pages whose
KV has arrived (``ready``) into device pages, on free pages only (it never evicts), and says which page ids
to write::

    tree after rebuild     root ─ [A1 A2 A3](disk) ─ [B1 B2](disk)
    plan                   A1 A2 A3 B1 B2            (best branch first, parents first)
    ready = {A1, A2, B1}   root ─ [A1 A2] ─ [A3](disk) ─ [B1 B2](disk)     placed: A1, A2
                           (B1 waits for A3, the page above it)

A planned page that is no longer a demoted page waiting below the device (a request reloaded or recomputed
it, or its node left the tree) is reported ``gone``: the caller drops its copy. Pure host code over the
cache's private state, as tiers.py; no store, no jax.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from trellis_jax.cache.node import TreeNode
from trellis_jax.cache.tiers import LowerRun, parent_key, promote
from trellis_jax.cache.tree import iter_nodes


@dataclass
class PrefetchPlan:
    """The pages to prefetch: ``keys`` in load order, each key's parent key (None: a prompt's first page)
    and the node holding it when planned (a split keeps a key's later pages in the original object)."""

    keys: list[bytes] = field(default_factory=list)
    parent: dict[bytes, bytes | None] = field(default_factory=dict)
    node: dict[bytes, TreeNode] = field(default_factory=dict)


def plan_prefetch(cache, budget: int, rank: Callable[[bytes], int]) -> PrefetchPlan:
    """Up to ``budget`` demoted pages hanging below device nodes, best branch first (a branch's score: the
    highest ``rank`` of a page in it or below it), each page after the page above it. Mutates nothing."""
    if not isinstance(budget, int) or budget < 0:
        raise ValueError(f"budget must be an int >= 0 (pages), got {budget!r}")
    plan = PrefetchPlan()
    if cache._tiers is None or budget == 0:
        return plan
    demoted = [n for n in iter_nodes(cache._root) if n.tier is not None]  # parents before children
    best: dict[int, int] = {}
    for n in reversed(demoted):
        scores = [rank(k) for k in n.page_keys] + [best[id(c)] for c in n.children.values()]
        best[id(n)] = max(scores)
    frontier = [(-best[id(n)], i, n) for i, n in enumerate(demoted) if n.parent.tier is None]
    heapq.heapify(frontier)
    order = len(demoted)
    while frontier and len(plan.keys) < budget:
        _, _, node = heapq.heappop(frontier)
        take = min(node.num_pages, budget - len(plan.keys))
        above = parent_key(cache, node)
        for key in node.page_keys[:take]:
            plan.keys.append(key)
            plan.parent[key], plan.node[key] = above, node
            above = key
        if take == node.num_pages:
            for child in node.children.values():
                order += 1
                heapq.heappush(frontier, (-best[id(child)], order, child))
    return plan


def place_prefetched(
    cache, plan: PrefetchPlan, ready: Collection[bytes]
) -> tuple[list[tuple[bytes, int]], list[bytes]]:
    """Make the ``ready`` pages of ``plan`` that hang right below the device (or below pages placed in this
    call) device pages, in free pages only: -> ([(key, page id)] whose KV the caller writes before the next
    step reads it, [keys gone]). A ready page whose parent page is still demoted stays for a later call.
    Mutates the tree and the allocator; locks nothing (the placed pages are evictable like any cached page)."""
    placed: list[tuple[bytes, int]] = []
    gone: list[bytes] = []
    done: set[bytes] = set()
    for key in plan.keys:
        if key not in ready or key in done:
            continue
        node = plan.node[key]
        if not node.alive or node.tier is None or key not in node.page_keys:
            gone.append(key)
            continue
        if node.page_keys[0] != key or node.parent.tier is not None:
            continue  # the page above it is not on the device yet
        take = 0
        while take < len(node.page_keys) and node.page_keys[take] in ready and take < cache.num_free_pages:
            take += 1
        if take == 0:
            break  # no free page left: what remains waits (or is given up by the caller)
        keys = tuple(node.page_keys[:take])
        page_ids = cache.alloc_pages(take)  # take <= free pages: evicts nothing
        promote(cache, LowerRun((node,), keys, (node.tier,) * take, cache.page_size), page_ids, fresh=False)
        placed += zip(keys, page_ids)
        done.update(keys)
    return placed, gone


class PrefetchMethods:
    """RadixCache's prefetch methods (a mixin over its state; see the module docstring)."""

    def prefetch_plan(self, budget: int, rank: Callable[[bytes], int]) -> PrefetchPlan:
        """The demoted pages to bring back first (plan_prefetch); read only. Needs tiers enabled."""
        if self._tiers is None:
            raise ValueError("enable_tiers first: prefetch brings back demoted pages")
        return plan_prefetch(self, budget, rank)

    def place_prefetched(
        self, plan: PrefetchPlan, ready: Collection[bytes]
    ) -> tuple[list[tuple[bytes, int]], list[bytes]]:
        """The ready pages of ``plan`` made device pages in free pages (module function of the same name)."""
        return place_prefetched(self, plan, ready)
