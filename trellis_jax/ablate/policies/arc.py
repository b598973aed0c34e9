"""ARC-style eviction for the radix tree (Megiddo & Modha's Adaptive Replacement Cache, adapted),
registered as ``"arc"``: an example of a stateful policy in one small file.

Adaptation to a tree of leaves measured in pages:
- a node is *recent* until a match hits it a second time (``access_count >= 2``), then *frequent*;
  ``node.policy_value`` remembers its segment so a promotion is seen once;
- unlocked leaves wait in two LRU queues (the built-in ``lru`` policy, one per segment);
- the victim comes from the recent queue while recent pages exceed the target ``p``, else from the
  frequent queue (either when the other is empty);
- every evicted page leaves a ghost (namespace, position, hash of its tokens) in B1 or B2 by its
  segment; a new leaf whose first page is a ghost of B1 (recomputed right where an eviction cut)
  means recency was undervalued: ``p`` grows by the leaf's pages; a ghost of B2 shrinks it. The
  signature names a page by its own tokens and position, not its whole path: rare false ghost hits
  only nudge ``p``. Ghost lists keep at most ``ghost_pages`` entries each (ARC keeps about the
  cache size).
"""

from __future__ import annotations

from collections import OrderedDict

from trellis_jax.cache import EvictionPolicy, TreeNode, get_policy, register_policy

RECENT, FREQUENT = 0.0, 1.0


@register_policy("arc")
class ARCPolicy(EvictionPolicy):
    name = "arc"

    def __init__(self, ghost_pages: int = 4096) -> None:
        if ghost_pages < 1:
            raise ValueError(f"ghost_pages must be >= 1, got {ghost_pages}")
        self.ghost_pages = ghost_pages
        self.queues = {RECENT: get_policy("lru"), FREQUENT: get_policy("lru")}
        self.pages = {RECENT: 0, FREQUENT: 0}  # resident pages per segment (candidates or not)
        self.ghosts = {RECENT: OrderedDict(), FREQUENT: OrderedDict()}
        self.target_recent_pages = 0

    # ---- candidates ----------------------------------------------------------------------------
    def add_candidate(self, node: TreeNode) -> None:
        self.queues[node.policy_value].add_candidate(node)

    def discard_candidate(self, node: TreeNode) -> None:
        self.queues[node.policy_value].discard_candidate(node)

    def is_candidate(self, node: TreeNode) -> bool:
        return self.queues[node.policy_value].is_candidate(node)

    @property
    def num_candidates(self) -> int:
        return self.queues[RECENT].num_candidates + self.queues[FREQUENT].num_candidates

    def pop_victim(self) -> TreeNode | None:
        recent, frequent = self.queues[RECENT], self.queues[FREQUENT]
        prefer_recent = self.pages[RECENT] > self.target_recent_pages
        first, second = (recent, frequent) if prefer_recent else (frequent, recent)
        return first.pop_victim() or second.pop_victim()

    # ---- hooks ---------------------------------------------------------------------------------
    def on_insert(self, node: TreeNode) -> None:
        node.policy_value = RECENT
        self.pages[RECENT] += node.num_pages
        signature = _page_signature(node, 0)
        if self.ghosts[RECENT].pop(signature, None) is not None:
            self.target_recent_pages += node.num_pages
        elif self.ghosts[FREQUENT].pop(signature, None) is not None:
            self.target_recent_pages = max(0, self.target_recent_pages - node.num_pages)

    def on_access(self, node: TreeNode) -> None:
        if node.policy_value == RECENT and node.access_count >= 2:
            was_candidate = self.queues[RECENT].is_candidate(node)
            self.queues[RECENT].discard_candidate(node)
            self.pages[RECENT] -= node.num_pages
            self.pages[FREQUENT] += node.num_pages
            node.policy_value = FREQUENT
            if was_candidate:
                self.queues[FREQUENT].add_candidate(node)
        self.queues[node.policy_value].on_access(node)

    def on_split(self, upper: TreeNode, lower: TreeNode) -> None:
        self.queues[lower.policy_value].on_split(upper, lower)  # pages per segment are unchanged

    def on_evict(self, node: TreeNode, num_pages: int) -> None:
        segment = node.policy_value
        self.pages[segment] -= num_pages
        ghosts = self.ghosts[segment]
        for page in range(node.num_pages - num_pages, node.num_pages):
            ghosts[_page_signature(node, page)] = True
        while len(ghosts) > self.ghost_pages:
            ghosts.popitem(last=False)


def _page_signature(node: TreeNode, page: int) -> tuple:
    """(owner, token position where page ``page`` of ``node`` ends, hash of its tokens)."""
    page_size = node.num_tokens // node.num_pages
    start = node.depth - node.num_tokens + page * page_size
    return node.owner, start + page_size, hash(node.key[page * page_size : (page + 1) * page_size])
