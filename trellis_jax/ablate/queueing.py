"""The waiting queue of a simulated server: which requests have arrived, and in what order they run.

Orders (``ORDERS``):
- ``fcfs``: arrival order;
- ``lpm``: longest cached prefix first among the ``window`` oldest waiting requests (ties by arrival),
  the engine's ``lpm-window``. The prefix length comes from ``RadixCache.peek`` (of ``prompt[:-1]``),
  as the engine's scheduler gets it: looking does not refresh any policy metadata.

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

ORDERS = ("fcfs", "lpm")


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

    def candidates(self, prefix_len: Callable[[TraceRequest], int]) -> list[int]:
        """Visible waiting requests in the order they should run (a permutation of the window)."""
        self._fill()
        if self.order == "fcfs" or len(self.waiting) == 1:
            return list(self.waiting)
        lengths = {i: prefix_len(self.requests[i]) for i in self.waiting}
        return sorted(self.waiting, key=lambda i: -lengths[i])  # stable: ties stay in arrival order

    def remove(self, index: int) -> None:
        self.waiting.remove(index)

    def advance(self, seconds: float) -> None:
        self.clock += seconds
