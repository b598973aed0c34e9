"""A clairvoyant eviction policy run through the real tree: an *achievable* offline hit rate, the
lower end of the bracket around the true optimum (the relaxed bound of ``optimal.py`` is the upper end).

``ClairvoyantPolicy`` evicts the leaf whose last page is next needed furthest in the future (never
needed first), Belady's rule applied to the radix tree. It is a real ``EvictionPolicy`` replayed through
``RadixCache`` with every real constraint (prefix-closed tree, pages of running requests, mandatory
inserts), so its hits are feasible: best policy <= true optimum, clairvoyant <= true optimum <= relaxed
bound. When clairvoyant and the bound are close, the bound is tight.

Future knowledge: ``FutureUses`` lists, for every page (identified by a hash chained over the pages of its
path, from the namespace down), the positions in the serving order where a request matches it (the
counted references of ``optimal.py``). The replay moves ``FutureUses.now`` to each request's position
before admitting it (``replay(..., before_admit=...)``). A page's next use only changes when the page is
used, and then the cache calls ``on_access`` on its node, so heap keys never go stale between uses.
Arrival order only (fcfs): the serving order must be known in advance. Shared namespaces are refused.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

from trellis_jax.ablate.replay import ReplayConfig, ReplayResult, replay
from trellis_jax.ablate.trace import Trace
from trellis_jax.cache import HeapPolicy, TreeNode

NEVER = float("inf")


def _root_hash(owner) -> int:
    return hash(("trellis-ablate-root", owner))


def _chain(parent_hash: int, key: tuple, num_pages: int, page_size: int) -> int:
    h = parent_hash
    for j in range(num_pages):
        h = hash((h, key[j * page_size : (j + 1) * page_size]))
    return h


class FutureUses:
    """Counted-use positions of every page of ``trace`` served in arrival order."""

    def __init__(self, trace: Trace, page_size: int) -> None:
        if trace.shared_namespaces:
            raise ValueError("the clairvoyant policy does not model shared namespaces")
        self.page_size = page_size
        self.now = -1
        uses: dict[int, list[int]] = defaultdict(list)
        for position, r in enumerate(trace.requests):
            counted = (r.prompt_len - 1) // page_size
            tokens = tuple(r.prompt[: counted * page_size].tolist())
            h = _root_hash(r.namespace)
            for j in range(counted):
                h = hash((h, tokens[j * page_size : (j + 1) * page_size]))
                uses[h].append(position)
        self.uses = dict(uses)

    def next_use(self, page_hash: int) -> float:
        positions = self.uses.get(page_hash)
        if not positions:
            return NEVER
        i = bisect.bisect_right(positions, self.now)
        return positions[i] if i < len(positions) else NEVER


class ClairvoyantPolicy(HeapPolicy):
    """Evict the leaf whose last page is needed furthest in the future (``node.policy_value`` holds the
    hash of the path up to the node's last page)."""

    name = "clairvoyant"

    def __init__(self, future: FutureUses) -> None:
        super().__init__()
        self.future = future
        self.page_size = future.page_size

    def sort_key(self, node: TreeNode):
        return -self.future.next_use(node.policy_value)

    def _parent_hash(self, node: TreeNode) -> int:
        parent = node.parent
        return _root_hash(node.owner) if parent.parent is None else parent.policy_value

    def on_insert(self, node: TreeNode) -> None:
        node.policy_value = _chain(self._parent_hash(node), node.key, node.num_pages, self.page_size)

    def on_split(self, upper: TreeNode, lower: TreeNode) -> None:
        upper.policy_value = _chain(self._parent_hash(upper), upper.key, upper.num_pages, self.page_size)
        super().on_split(upper, lower)

    def on_evict(self, node: TreeNode, num_pages: int) -> None:
        kept = node.num_pages - num_pages
        if kept:  # the leaf is trimmed: its last page becomes an earlier one
            node.policy_value = _chain(self._parent_hash(node), node.key, kept, self.page_size)


def clairvoyant_replay(trace: Trace, num_pages: int, page_size: int, check_integrity: bool = False) -> ReplayResult:
    """Replay ``trace`` in arrival order through ``RadixCache`` with the clairvoyant policy."""
    future = FutureUses(trace, page_size)

    def before_admit(index: int) -> None:
        future.now = index

    config = ReplayConfig(num_pages, page_size, ClairvoyantPolicy(future), "fcfs", check_integrity=check_integrity)
    return replay(trace, config, before_admit=before_admit)
