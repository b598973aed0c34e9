"""Routing policies: which healthy worker gets a request.

- `round_robin`: the next worker in turn, whatever the prompt.
- `least_load`: the worker with the fewest requests in flight (ties: in turn).
- `cache_aware`: the worker whose prefix index holds the longest match of the request's key, unless
    * the match is below `cache_threshold` of the key (little to reuse anywhere): then the least loaded
      worker, ties to the one with the smallest index, so new prefixes spread over the workers; or
    * the best-matching worker has more than `imbalance_threshold` requests in flight beyond the idlest
      one: then the idlest, so a hot prefix cannot pile every request onto one replica.
  Ties between equal matches go to the less loaded worker.

`choose` returns a `Decision` (worker, reason, matched elements) and records the key in the chosen
worker's index (the worker will cache that prompt). Every policy keeps the index up to date, so the
metrics can report what a policy's choices could have matched, and a switch of policy starts warm.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

from trellis_jax.router.keys import RouteKey
from trellis_jax.router.prefix_index import PrefixIndex
from trellis_jax.router.workers import Worker

POLICIES = ("cache_aware", "round_robin", "least_load")


class Decision(NamedTuple):
    worker: Worker
    reason: str  # cache_hit | imbalance | no_match | round_robin | least_load
    matched: int  # elements of the key the chosen worker's index held


class Policy:
    def __init__(self, name: str, index: PrefixIndex, *, cache_threshold: float = 0.5, imbalance_threshold: int = 8):
        if name not in POLICIES:
            raise ValueError(f"unknown routing policy {name!r}; choose one of {', '.join(POLICIES)}")
        if not 0.0 <= cache_threshold <= 1.0:
            raise ValueError(f"cache_threshold must be in [0, 1], got {cache_threshold}")
        if imbalance_threshold < 0:
            raise ValueError(f"imbalance_threshold must be >= 0, got {imbalance_threshold}")
        self.name, self.index = name, index
        self.cache_threshold, self.imbalance_threshold = cache_threshold, imbalance_threshold
        self._turn = itertools.count()

    def choose(self, key: RouteKey, candidates: list[Worker]) -> Decision:
        """Pick among `candidates` (non-empty, in join order) and record the key under the pick (mutates the
        index and the round-robin turn)."""
        if not candidates:
            raise ValueError("no candidate worker to route to")
        names = self.index.block_names(key.namespace, key.elements)
        matches = {w.url: self.index.match(w.url, names) for w in candidates}
        turn = next(self._turn)
        if self.name == "round_robin":
            worker, reason = candidates[turn % len(candidates)], "round_robin"
        elif self.name == "least_load":
            worker, reason = self._idlest(candidates, turn), "least_load"
        else:
            worker, reason = self._cache_aware(key, candidates, matches, turn)
        self.index.insert(worker.url, names)
        return Decision(worker, reason, matches[worker.url])

    def _cache_aware(self, key: RouteKey, candidates: list[Worker], matches: dict[str, int], turn: int):
        best = max(candidates, key=lambda w: (matches[w.url], -w.in_flight))
        idlest = self._idlest(candidates, turn)
        if matches[best.url] == 0 or matches[best.url] < self.cache_threshold * len(key.elements):
            fewest = min(w.in_flight for w in candidates)
            idle = [w for w in candidates if w.in_flight == fewest]
            return min(idle, key=lambda w: self.index.size(w.url)), "no_match"
        if best.in_flight - idlest.in_flight > self.imbalance_threshold:
            return idlest, "imbalance"
        return best, "cache_hit"

    @staticmethod
    def _idlest(candidates: list[Worker], turn: int) -> Worker:
        """The least loaded worker; ties broken in turn so equal workers share the traffic."""
        rotated = candidates[turn % len(candidates) :] + candidates[: turn % len(candidates)]
        return min(rotated, key=lambda w: w.in_flight)
