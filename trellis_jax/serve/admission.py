"""Backpressure: a bounded number of generation requests in the server; the rest get 429 at once.

A request holds one slot from the moment it is accepted until its response ends (finished, failed or
the client left). At most `max_running + max_waiting` slots exist: `max_running` requests can run in
one engine step (the scheduler's max_num_seqs); up to `max_waiting` more wait in the scheduler's queue.
Past that a request is refused with 429, `Retry-After` and an OpenAI rate-limit error body, instead of
queueing without bound (every queued request is a prompt held in host memory and a client waiting
longer than a full pool's turnover).

Default queue depth (`default_max_waiting`): the number of quarter-context requests the KV pool holds at
once, and at least max_num_seqs. A waiting request can only start once pages free up; a queue deeper than
one pool's worth of typical requests adds latency, not throughput.

Single-threaded: used from the event loop only (no lock).
"""

from __future__ import annotations

from trellis_jax.serve.errors import APIError

RETRY_AFTER_S = 1


def default_max_waiting(*, max_num_seqs: int, pool_tokens: int, max_model_len: int) -> int:
    """How many requests may wait beyond the running batch when `--max-waiting-requests` is not given."""
    typical_request = max(1, max_model_len // 4)
    return max(max_num_seqs, pool_tokens // typical_request)


def admission_for(engine, max_waiting: int | None) -> Admission:
    """The cap of an AsyncEngine's server: its scheduler's batch size, and `max_waiting` or the default
    from its KV pool (an engine without a scheduler, e.g. a stand-in: one running request)."""
    scheduler = getattr(getattr(engine, "engine", None), "scheduler", None)
    if scheduler is None:
        return Admission(max_running=1, max_waiting=max_waiting or 0)
    config, cache = scheduler.config, scheduler.kv.cache
    if max_waiting is None:
        max_waiting = default_max_waiting(
            max_num_seqs=config.max_num_seqs,
            pool_tokens=cache.num_pages * config.page_size,
            max_model_len=config.max_model_len,
        )
    return Admission(max_running=config.max_num_seqs, max_waiting=max_waiting)


class Admission:
    """Counts the requests in the server and refuses those past `max_running + max_waiting`."""

    def __init__(self, *, max_running: int, max_waiting: int):
        if max_running < 1 or max_waiting < 0:
            raise ValueError(f"need max_running >= 1 and max_waiting >= 0, got {max_running} and {max_waiting}")
        self.max_running, self.max_waiting = max_running, max_waiting
        self.in_flight = 0
        self.rejected = 0

    @property
    def capacity(self) -> int:
        return self.max_running + self.max_waiting

    def acquire(self) -> Slot:
        """Take a slot, or raise a 429 APIError (nothing taken) when the queue is full."""
        if self.in_flight >= self.capacity:
            self.rejected += 1
            raise APIError(
                429,
                f"the server is at capacity ({self.max_running} running and {self.max_waiting} "
                f"waiting requests); retry after {RETRY_AFTER_S} s",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.in_flight += 1
        return Slot(self)


class Slot:
    """One request's place; `release()` gives it back, and only the first call counts (every path that
    ends a response may call it)."""

    def __init__(self, admission: Admission):
        self._admission: Admission | None = admission

    def release(self) -> None:
        if self._admission is not None:
            self._admission.in_flight -= 1
            self._admission = None
