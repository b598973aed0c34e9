"""The waiting queue of a simulated server: which requests have arrived, and in what order they run.

Orders (``ORDERS``):
- ``fcfs``: arrival order;
- ``lpm``: longest cached prefix first among the ``window`` oldest waiting requests (ties by arrival),
  the engine's ``lpm-window``. The prefix length comes from ``RadixCache.peek`` (of ``prompt[:-1]``),
  as the engine's scheduler gets it: looking does not refresh any policy metadata.
- ``dfs``: the SGLang paper's order (the engine's ``dfs-weight``) in rounds: the ``window`` oldest waiting
  prompts' pages form a trie, walked depth first with heavier subtrees (more requests) first; that
  round is served in this order before the next window is taken, so requests sharing a prefix run back
  to back, even one not cached yet (re-sorting after every request would lose the grouping once the
  first of a group has run). Needs no cache lookups.

Time: without arrival times every request is waiting from the start. With them a simulated clock runs:
a batch takes ``sum(uncached prompt tokens) / prefill_tokens_per_s + max(output tokens) /
decode_tokens_per_s`` seconds (a simple server model, enough to decide which requests wait together),
and only requests that arrived by the clock are eligible. Only the ``window`` oldest waiting requests
are ever looked at, so the queue costs O(window) per pick whatever the backlog.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trellis_jax.ablate.trace import Trace, TraceRequest

ORDERS = ("fcfs", "lpm", "dfs")


@dataclass(frozen=True)
class ServerModel:
    """Service time of a batch in the simulated clock (only used when the trace has arrival times)."""

    prefill_tokens_per_s: float = 2000.0
    decode_tokens_per_s: float = 50.0

    def batch_seconds(self, uncached_prompt_tokens: int, max_output_tokens: int) -> float:
        return uncached_prompt_tokens / self.prefill_tokens_per_s + max_output_tokens / self.decode_tokens_per_s


class WaitingQueue:
    """Arrived, unserved requests (trace indices), oldest first, at most ``window`` of them visible."""

    def __init__(self, trace: Trace, order: str, window: int) -> None:
        if order not in ORDERS:
            raise ValueError(f"unknown scheduling order {order!r}; known: {ORDERS}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.requests = trace.requests
        self.timed = trace.has_arrival_times
        self.order, self.window = order, window
        self.clock = 0.0
        self.next_arrival = 0  # index of the first request not yet in `waiting`
        self.waiting: list[int] = []
        self.round: list[int] = []  # dfs: the current round, in service order

    def __bool__(self) -> bool:
        return bool(self.waiting) or self.next_arrival < len(self.requests)

    def _fill(self) -> None:
        requests = self.requests
        while len(self.waiting) < self.window and self.next_arrival < len(requests):
            if self.timed and requests[self.next_arrival].arrival_time > self.clock:
                if self.waiting:
                    return
                self.clock = requests[self.next_arrival].arrival_time  # idle server: jump to the arrival
            self.waiting.append(self.next_arrival)
            self.next_arrival += 1

    def candidates(self, prefix_len: Callable[[TraceRequest], int], page_size: int) -> list[int]:
        """Visible waiting requests in the order they should run (a permutation of the window)."""
        if not self.round:
            self._fill()
        if self.order == "fcfs" or len(self.waiting) == 1:
            return list(self.waiting)
        if self.order == "dfs":
            if not self.round:
                self.round = heaviest_subtree_first(self.waiting, [self.requests[i] for i in self.waiting], page_size)
            return list(self.round)
        lengths = {i: prefix_len(self.requests[i]) for i in self.waiting}
        return sorted(self.waiting, key=lambda i: -lengths[i])  # stable: ties stay in arrival order

    def remove(self, index: int) -> None:
        self.waiting.remove(index)
        if index in self.round:
            self.round.remove(index)

    def advance(self, seconds: float) -> None:
        self.clock += seconds


def heaviest_subtree_first(indices: list[int], requests: list[TraceRequest], page_size: int) -> list[int]:
    """``indices`` reordered by a depth-first walk of their prompts' page trie, heavier subtrees first
    (ties by arrival); a request is emitted at the node where its whole pages end."""
    root: dict = {"children": {}, "weight": 0, "here": []}
    for index, request in zip(indices, requests):
        node = root
        node["weight"] += 1
        usable = (request.prompt_len - 1) // page_size * page_size
        for page in request.prompt[:usable].reshape(-1, page_size):
            node = node["children"].setdefault(page.tobytes(), {"children": {}, "weight": 0, "here": []})
            node["weight"] += 1
        node["here"].append(index)
    ordered, stack = [], [root]
    while stack:
        node = stack.pop()
        ordered.extend(node["here"])
        children = sorted(node["children"].values(), key=lambda c: c["weight"], reverse=True)
        stack.extend(reversed(children))  # the heaviest is popped first
    return ordered
