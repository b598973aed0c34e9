"""Replay with tiers: L1 is the production ``RadixCache`` (as in ``replay``), L2 (host RAM) and L3 (disk)
are page stores simulated here; costs and the reload rule are ``tiers.TierConfig``'s.

    L1 evicts a leaf's last pages (any policy) --demote--> L2 (LRU) --overflow--> L3 (LRU) --overflow--> dropped
    request: match prompt[:-1] in L1 (m pages) | then its counted pages m, m+1, ... in L2/L3, while each is
                                                 found and its tier's reload is cheaper: reloaded (a hit)
                                               | the rest is recomputed

- Eviction is tapped, not reimplemented: ``TierTap`` wraps the replay's policy and, in its ``on_evict``
  hook (called by ``RadixCache`` before a leaf's pages leave), demotes each leaving page, deepest first,
  so a prefix's shallow pages are the most recent in L2 and outlive their children there.
- Pages are identified by their whole path (namespace + every token from the root to the end of the
  page), interned to ints (``PageIds``), so a page demoted by one request is found by another's prompt.
- Lower tiers are inclusive: a reloaded page keeps its copy below, so evicting it from L1 again writes
  nothing (it is only refreshed). Each lower tier evicts by LRU; its capacity counts distinct pages.
- Reloaded pages take L1 pages like computed ones and enter the tree at the request's insert. The request
  looks below before it allocates, and the pages it will reload are pinned while L1 makes room (the pages
  L1 evicts then are demoted and must not push them out). The walk below stops at the first page that
  is not found, or whose tier the rule says to recompute: the engine prefills a suffix, so nothing after
  a recomputed page is reloaded. A hit is counted in the fastest tier holding the page.
Refused (``ValueError``): shared namespaces (a private prompt may continue a shared path; not modelled)
and ``partial_pages`` (copies from a sibling's page are not modelled below L1).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from trellis_jax.ablate.queueing import ServerModel
from trellis_jax.ablate.replay import ReplayConfig, ReplayResult, _Running, _Simulator
from trellis_jax.ablate.tiers import TierConfig
from trellis_jax.ablate.trace import Trace
from trellis_jax.cache import EvictionPolicy, TreeNode


class PageIds:
    """Interned page identities: id of (parent page id, the page's tokens); a root id per namespace.

    ``path`` remembers the ids of each live tree node's pages: a node only ever loses pages at its end
    (an eviction trims it), which keeps a prefix of the list valid; ``forget`` drops the entry when that
    is not so (a split: the node now starts later) or the node left the tree."""

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self._ids: dict[tuple, int] = {}
        self._paths: dict[TreeNode, list[int]] = {}

    def root(self, owner) -> int:
        return self._ids.setdefault(("root", owner), len(self._ids))

    def child(self, parent: int, page: tuple) -> int:
        return self._ids.setdefault((parent, page), len(self._ids))

    def find(self, parent: int, page: tuple) -> int | None:
        return self._ids.get((parent, page))

    def path(self, node: TreeNode) -> list[int]:
        """Ids of the pages of ``node`` (a node in the tree, not its root), in order."""
        ids = self._paths.get(node)
        if ids is None or len(ids) < node.num_pages:
            above, ids, ps = node.parent, [], self.page_size
            parent = self.root(node.owner) if above.parent is None else self.path(above)[-1]
            for j in range(0, len(node.key), ps):
                parent = self.child(parent, node.key[j : j + ps])
                ids.append(parent)
            self._paths[node] = ids
        return ids[: node.num_pages]

    def forget(self, node: TreeNode) -> None:
        self._paths.pop(node, None)


@dataclass
class TierCounters:
    demoted_pages: int = 0  # written into the tier (copies already there are refreshed, not counted)
    dropped_pages: int = 0  # pushed out of the tier (into the next one, or out of the hierarchy)
    reloaded_pages: int = 0
    declined_pages: int = 0  # found here, recomputed (the rule): the walk stops there, so <= 1 per request


@dataclass
class LowerTier:
    capacity: int  # pages
    pages: OrderedDict = field(default_factory=OrderedDict)  # page id -> None, least recently used first
    counters: TierCounters = field(default_factory=TierCounters)

    def put(self, page: int, pinned: set[int]) -> int | None:
        """Store (or refresh) ``page``; returns the page pushed out to make room (the least recently used
        one not ``pinned``; ``page`` itself when every stored page is), if any."""
        if page in self.pages:
            self.pages.move_to_end(page)
            return None
        self.counters.demoted_pages += 1
        self.pages[page] = None
        if len(self.pages) <= self.capacity:
            return None
        self.counters.dropped_pages += 1
        if not pinned:
            return self.pages.popitem(last=False)[0]
        victim = next((p for p in self.pages if p not in pinned), page)
        del self.pages[victim]
        return victim


class Hierarchy:
    """L2 and L3 below the device pool; tier numbers are 2 and 3 (an absent tier has capacity 0)."""

    def __init__(self, config: TierConfig, page_size: int) -> None:
        self.config, self.page_size = config, page_size
        l2, l3 = config.tier_pages(page_size)
        self.tiers = {t: LowerTier(c) for t, c in ((2, l2), (3, l3)) if c > 0}
        self.dropped_from_l1 = 0  # evicted from L1 with no tier below to take them
        self.pinned: set[int] = set()  # pages about to be reloaded: never pushed out

    def demote(self, page: int) -> None:
        if not self.tiers:
            self.dropped_from_l1 += 1
            return
        for store in self.tiers.values():  # L2, then L3 takes what L2 pushes out
            page = store.put(page, self.pinned)
            if page is None:
                return

    def find(self, page: int) -> int | None:
        """The fastest tier holding ``page``, or None."""
        return next((t for t, store in self.tiers.items() if page in store.pages), None)

    def reload(self, page: int, tier: int) -> None:
        store = self.tiers[tier]
        store.pages.move_to_end(page)
        store.counters.reloaded_pages += 1


class TierTap(EvictionPolicy):
    """``inner`` unchanged, except that pages leaving L1 are demoted into ``hierarchy``."""

    def __init__(self, inner: EvictionPolicy, hierarchy: Hierarchy, ids: PageIds) -> None:
        self.inner, self.hierarchy, self.ids = inner, hierarchy, ids
        self.name = inner.name

    def add_candidate(self, node: TreeNode) -> None:
        self.inner.add_candidate(node)

    def discard_candidate(self, node: TreeNode) -> None:
        self.inner.discard_candidate(node)

    def pop_victim(self) -> TreeNode | None:
        return self.inner.pop_victim()

    def is_candidate(self, node: TreeNode) -> bool:
        return self.inner.is_candidate(node)

    @property
    def num_candidates(self) -> int:
        return self.inner.num_candidates

    def on_insert(self, node: TreeNode) -> None:
        self.inner.on_insert(node)

    def on_access(self, node: TreeNode) -> None:
        self.inner.on_access(node)

    def on_split(self, upper: TreeNode, lower: TreeNode) -> None:
        self.ids.forget(lower)  # lower now starts after upper's pages
        self.inner.on_split(upper, lower)

    def on_evict(self, node: TreeNode, num_pages: int) -> None:
        leaving = self.ids.path(node)[-num_pages:]
        for page in reversed(leaving):  # deepest first: the shallow pages end up most recent
            self.hierarchy.demote(page)
        if num_pages == node.num_pages:
            self.ids.forget(node)
        self.inner.on_evict(node, num_pages)


@dataclass
class TieredResult:
    replay: ReplayResult  # cached_tokens / hit_rate count every hit: L1 and reloaded
    tier: TierConfig
    tier_tokens: np.ndarray  # [3, num_requests] hit tokens served from L1, L2, L3 (trace order)
    counters: dict[int, TierCounters]  # per lower tier present (2, 3)
    dropped_from_l1: int  # pages evicted from L1 with no lower tier

    def tier_hit_rate(self, tier: int) -> float:
        """Hit tokens served from ``tier`` (1, 2 or 3) / prompt tokens."""
        return int(self.tier_tokens[tier - 1].sum()) / int(self.replay.prompt_tokens.sum())

    def reloaded_bytes(self, tier: int) -> int:
        return int(self.tier_tokens[tier - 1].sum()) * self.tier.kv_bytes_per_token

    def written_bytes(self, tier: int) -> int:
        c = self.counters.get(tier)
        return 0 if c is None else c.demoted_pages * self.tier.page_bytes(self.replay.config.page_size)

    @property
    def recomputed_tokens(self) -> int:
        return int(self.replay.prompt_tokens.sum()) - self.replay.hit_tokens

    def time_saved_s(self) -> float:
        """Modelled prefill seconds saved by every hit, net of the reloads (vs no cache at all)."""
        ps = self.replay.config.page_size
        pages = self.tier_tokens.sum(axis=1) // ps
        return sum(float(pages[t - 1]) * self.tier.saving_seconds(t, ps) for t in (1, 2, 3))

    def reload_seconds(self) -> float:
        ps = self.replay.config.page_size
        pages = self.tier_tokens.sum(axis=1) // ps
        return sum(float(pages[t - 1]) * self.tier.reload_seconds(t, ps) for t in (2, 3))


class _TieredSimulator(_Simulator):
    def __init__(self, trace: Trace, config: ReplayConfig, tier: TierConfig, server, before_admit) -> None:
        if trace.shared_namespaces:
            raise ValueError("the tier simulation does not model shared namespaces")
        if config.partial_pages:
            raise ValueError("the tier simulation counts whole pages only: use partial_pages=False")
        self.tier = tier
        self.ids = PageIds(config.page_size)
        self.hierarchy = Hierarchy(tier, config.page_size)
        self.tier_tokens = np.zeros((3, len(trace)), np.int64)
        super().__init__(trace, config, server, before_admit)

    def make_policy(self) -> EvictionPolicy:
        return TierTap(super().make_policy(), self.hierarchy, self.ids)

    def admit(self, index: int) -> _Running | None:
        self.admitting = index
        run = super().admit(index)
        if run is not None:  # the replay counted the L1 match; add what _allocate reloaded
            self.tier_tokens[0, index] = len(run.match_pages) * self.config.page_size
            self.cached[index] += self.tier_tokens[1:, index].sum()
        return run

    def _allocate(self, need: int, prompt_pages: int, match, source) -> list[int] | None:
        """Finds the pages to reload first and pins them while L1 makes room (its evictions demote pages,
        which must not push these out), then reloads them if the pages were granted."""
        index, ps = self.admitting, self.config.page_size
        request = self.trace.requests[index]
        plan, declined = self._below(request.namespace, request.prompt, match.handle, len(match.page_ids))
        self.hierarchy.pinned = {page for page, _ in plan}
        try:
            own = super()._allocate(need, prompt_pages, match, source)
        finally:
            self.hierarchy.pinned = set()
        if own is None:
            return None  # retried later or rejected: nothing was reloaded (or declined) yet
        for page, tier in plan:
            self.hierarchy.reload(page, tier)
            self.tier_tokens[tier - 1, index] += ps
        if declined is not None:
            self.hierarchy.tiers[declined].counters.declined_pages += 1
        return own

    def _below(
        self, namespace: str, prompt: np.ndarray, handle: TreeNode, matched: int
    ) -> tuple[list[tuple[int, int]], int | None]:
        """(page id, tier) of the counted pages after the L1 match to reload, in order, and the tier of the
        page the walk stopped at because the rule recomputes it (None if it stopped otherwise)."""
        ids, ps, hierarchy = self.ids, self.config.page_size, self.hierarchy
        plan: list[tuple[int, int]] = []
        page = ids.root(namespace) if handle.parent is None else ids.path(handle)[-1]
        tokens = prompt[: (len(prompt) - 1) // ps * ps].tolist()
        for j in range(matched * ps, len(tokens), ps):
            page = ids.find(page, tuple(tokens[j : j + ps]))
            if page is None:
                break
            tier = hierarchy.find(page)
            if tier is None:
                break
            if not self.tier.reloads(tier, ps):
                return plan, tier
            plan.append((page, tier))
        return plan, None


def tiered_replay(
    trace: Trace,
    config: ReplayConfig,
    tier: TierConfig,
    server: ServerModel = ServerModel(),
    before_admit: Callable[[int], None] | None = None,
) -> TieredResult:
    """Replay ``trace`` through L1 = ``RadixCache(config)`` over the L2/L3 of ``tier``."""
    start = time.perf_counter()
    sim = _TieredSimulator(trace, config, tier, server, before_admit)
    sim.run()
    result = sim.result(time.perf_counter() - start)
    counters = {t: store.counters for t, store in sim.hierarchy.tiers.items()}
    return TieredResult(result, tier, sim.tier_tokens, counters, sim.hierarchy.dropped_from_l1)
