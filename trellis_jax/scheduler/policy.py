"""Admission order of waiting requests, chosen by name (`make_policy(name)`).

- "fcfs": arrival order.
- "priority": lower `priority` first, then arrival.
- "lpm": longest cached prefix first (matches every waiting request against the tree each step:
  O(waiting x prompt length); exact but costly with thousands waiting).
- "lpm-window": "lpm" over the `window` oldest waiting requests only, the rest after them in arrival
  order: the match work per step is bounded, and no request starves (it ages into the window).
- "dfs-weight": the SGLang paper's tree-aware order. The waiting prompts are laid into a trie of
  pages; a depth-first walk visits heavier subtrees (more requests) first, so requests sharing a
  prefix run back to back and the shared part is computed once while it is still cached.
  Built from the waiting prompts themselves (page hashes), so it groups shared prefixes that are not
  cached yet as well; O(waiting x pages) per step, no tree matches.

Every policy returns a permutation of `waiting`; ties break by arrival (stable).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from trellis_jax.scheduler.inflight import extend_page_hashes
from trellis_jax.scheduler.request import Request

PrefixLength = Callable[[Request], int]


class FcfsPolicy:
    def order(self, waiting: Sequence[Request], prefix_len: PrefixLength) -> list[Request]:
        return sorted(waiting, key=lambda r: r.arrival)


class PriorityPolicy:
    def order(self, waiting: Sequence[Request], prefix_len: PrefixLength) -> list[Request]:
        return sorted(waiting, key=lambda r: (r.priority, r.arrival))


class LongestPrefixPolicy:
    def order(self, waiting: Sequence[Request], prefix_len: PrefixLength) -> list[Request]:
        return _by_prefix(sorted(waiting, key=lambda r: r.arrival), prefix_len)


class WindowedLongestPrefixPolicy:
    def __init__(self, window: int) -> None:
        self.window = window

    def order(self, waiting: Sequence[Request], prefix_len: PrefixLength) -> list[Request]:
        by_age = sorted(waiting, key=lambda r: r.arrival)
        return _by_prefix(by_age[: self.window], prefix_len) + by_age[self.window :]


class DfsWeightPolicy:
    def __init__(self, page_size: int) -> None:
        self.page_size = page_size

    def order(self, waiting: Sequence[Request], prefix_len: PrefixLength) -> list[Request]:
        root = _TrieNode()
        for request in sorted(waiting, key=lambda r: r.arrival):
            node = root
            node.weight += 1
            for page_hash in extend_page_hashes(request, self.page_size):
                node = node.children.setdefault(page_hash, _TrieNode())
                node.weight += 1
            node.requests.append(request)
        return _heaviest_first(root)


class _TrieNode:
    __slots__ = ("children", "requests", "weight")

    def __init__(self) -> None:
        self.children: dict[int, _TrieNode] = {}
        self.requests: list[Request] = []
        self.weight = 0


def _heaviest_first(root: _TrieNode) -> list[Request]:
    ordered: list[Request] = []
    stack = [root]  # iterative: prompts can be thousands of pages deep
    while stack:
        node = stack.pop()
        ordered.extend(node.requests)
        # dicts keep insertion (arrival) order; sorted() is stable; push lightest first so heaviest pops first
        children = sorted(node.children.values(), key=lambda c: c.weight, reverse=True)
        stack.extend(reversed(children))
    return ordered


def _by_prefix(requests: list[Request], prefix_len: PrefixLength) -> list[Request]:
    lengths = {r.request_id: prefix_len(r) for r in requests}
    return sorted(requests, key=lambda r: -lengths[r.request_id])


def make_policy(name: str, *, page_size: int, lpm_window: int = 128):
    factories = {
        "fcfs": FcfsPolicy,
        "priority": PriorityPolicy,
        "lpm": LongestPrefixPolicy,
        "lpm-window": lambda: WindowedLongestPrefixPolicy(lpm_window),
        "dfs-weight": lambda: DfsWeightPolicy(page_size),
    }
    if name not in factories:
        raise ValueError(f"unknown schedule policy {name!r}; choose from {sorted(factories)}")
    return factories[name]()
