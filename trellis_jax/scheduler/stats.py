"""Scheduler counters (`SchedulerStats`), a cumulative histogram of queue times (`Histogram`), and the
per-step plan under construction (`StepBuilder`)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from trellis_jax.step_plan import SequenceWork

QUEUE_TIME_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Histogram:
    """Cumulative counts of observations per upper bound (Prometheus semantics: `counts[i]` observations
    <= `bounds[i]`, `count` in all, `sum` of values). Plain ints and floats: a reader on another thread
    (a metrics scrape) sees a possibly one-observation-stale but never torn view of each field."""

    def __init__(self, bounds: tuple[float, ...] = QUEUE_TIME_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"histogram bounds must be strictly increasing, got {bounds}")
        self.bounds = tuple(bounds)
        self.counts = [0] * len(bounds)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i in range(bisect.bisect_left(self.bounds, value), len(self.bounds)):
            self.counts[i] += 1
        self.count += 1
        self.sum += value


@dataclass
class SchedulerStats:
    """Cumulative since construction. Pages in use = locked + private (evictable tree pages are not)."""

    num_preemptions: int = 0
    num_admitted: int = 0
    num_prompt_tokens: int = 0
    num_cached_prompt_tokens: int = 0  # prompt tokens found in the tree at first admission
    num_partial_page_tokens: int = 0  # of those, tokens copied from a sibling's page (partial-page reuse)
    num_prefill_tokens_computed: int = 0  # computed positions inside the prompt (cache hits skip these)
    num_decode_tokens_computed: int = 0  # computed positions after the prompt (incl. recompute after preemption)
    peak_pages_in_use: int = 0
    num_draft_tokens: int = 0  # tokens guessed by prompt lookup and verified in a step
    num_accepted_draft_tokens: int = 0  # of those, the ones the model agreed with (kept)
    queue_time_s: Histogram = field(default_factory=Histogram)  # add_request -> first admission, seconds

    def observe_admitted(self, num_prompt_tokens: int, num_cached: int) -> None:
        self.num_admitted += 1
        self.num_prompt_tokens += num_prompt_tokens
        self.num_cached_prompt_tokens += num_cached

    def observe_computed(self, num_prompt_positions: int, num_later_positions: int) -> None:
        self.num_prefill_tokens_computed += num_prompt_positions
        self.num_decode_tokens_computed += num_later_positions

    def observe_pages(self, pages_in_use: int) -> None:
        self.peak_pages_in_use = max(self.peak_pages_in_use, pages_in_use)

    def observe_drafts(self, num_verified: int, num_accepted: int) -> None:
        self.num_draft_tokens += num_verified
        self.num_accepted_draft_tokens += num_accepted

    @property
    def cache_hit_rate(self) -> float:
        return self.num_cached_prompt_tokens / self.num_prompt_tokens if self.num_prompt_tokens else 0.0


class StepBuilder:
    """The sequences of the step being scheduled, the token budget left (preemption refunds it) and how
    many of the step's tokens are prompt (prefill) tokens."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._capacity = budget
        self.preempted = False
        self._works: dict[str, SequenceWork] = {}
        self._prefill: dict[str, int] = {}  # request id -> its work's prefill tokens

    @property
    def prefill_tokens(self) -> int:
        return sum(self._prefill.values())

    def add(self, work: SequenceWork, prefill_tokens: int = 0) -> None:
        self._works[work.request_id] = work
        self._prefill[work.request_id] = prefill_tokens
        self.budget -= len(work.token_ids)

    def drop(self, request_id: str) -> None:
        self.preempted = True
        work = self._works.pop(request_id, None)
        self._prefill.pop(request_id, None)
        if work is not None:
            self.budget += len(work.token_ids)

    def sequences(self) -> list[SequenceWork]:
        return list(self._works.values())

    @property
    def num_tokens(self) -> int:
        return self._capacity - self.budget  # every add spends its tokens, every drop refunds them

    def __len__(self) -> int:
        return len(self._works)
