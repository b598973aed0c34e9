"""Simulation-mode replay: a trace through the production ``RadixCache`` (no model, no device).

Each request goes through the cache exactly as the engine's scheduler drives it (``scheduler/kv_manager``):

    m = match(prompt[:-1], ns); lock(m)       at least one prompt token is always computed (its logits)
    p = partial_page(m, prompt[:-1], ns)      with partial_pages: a sibling page starting with the next
                                              tokens, locked while the prompt's own pages are allocated
                                              (the engine copies it); its shared tokens count as hits
    own = alloc_pages(pages(kv_len) - |m|)    may evict unlocked leaves by the policy; kv_len below
    (with partial_pages, at the end the partly filled last page enters the tree too, its key padded with
    TAIL_PAD, as the engine's KVManager.cache_tail_page does)
    insert(kv tokens cut to whole pages, m.page_ids + own, ns)   duplicates are freed by the cache
    unlock(m); free_pages(own pages still private: the partial last page)

``kv_len = prompt_len + max(output_len - 1, 0)``: the engine computes KV for the prompt and for every
generated token but the last (sampled, never fed back), and inserts those whole pages, so the next turn
of a chat (prompt = history + reply + new message) hits the reply too.

A batch of up to ``max_batch`` requests is admitted (match, lock, allocate) before any of them finishes
(insert, unlock), so running requests hold their pages while others are admitted; the engine publishes
pages during prefill/decode, so with ``max_batch > 1`` sibling requests see each other's pages a little
later here than in the engine. A request that cannot get its pages with nothing else running (prompt +
output larger than the pool) is counted as rejected, with no hit. Capacity ``num_pages`` counts usable
pages; the cache gets one more for the padding sink (page 0).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trellis_jax.ablate.queueing import ServerModel, WaitingQueue
from trellis_jax.ablate.trace import Trace, TraceRequest
from trellis_jax.cache import EvictionPolicy, OutOfPagesError, RadixCache, get_policy
from trellis_jax.scheduler.kv_manager import TAIL_PAD, lock_partial_source


@dataclass(frozen=True)
class ReplayConfig:
    num_pages: int
    page_size: int = 16
    policy: str | EvictionPolicy = "lru"  # a name, or an instance used as is (one replay only: it keeps state)
    order: str = "fcfs"
    window: int = 16
    max_batch: int = 1
    check_integrity: bool = False  # run cache.check_integrity() after every batch (tests)
    # Also reuse the first tokens of a sibling's page, as the engine does (copied into the request's own
    # page). Off by default: the optimal bound (optimal.py) and the policy grid count whole-page hits.
    partial_pages: bool = False

    def __post_init__(self):
        if self.num_pages < 1 or self.page_size < 1 or self.max_batch < 1:
            raise ValueError(f"num_pages, page_size and max_batch must be >= 1: {self}")


@dataclass
class ReplayResult:
    config: ReplayConfig
    cached_tokens: np.ndarray  # [num_requests] hit tokens per request (trace order)
    prompt_tokens: np.ndarray  # [num_requests]
    served_order: list[int]  # trace indices in the order they were admitted
    rejected: list[int]  # trace indices that did not fit in the pool
    evicted_pages: int
    inserted_pages: int
    peak_pages: int  # most pages ever allocated at once (tree + private)
    wall_s: float

    @property
    def hit_tokens(self) -> int:
        return int(self.cached_tokens.sum())

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / int(self.prompt_tokens.sum())


def kv_len(request: TraceRequest) -> int:
    """Tokens whose KV the engine computes (and inserts, as whole pages) for this request."""
    return request.prompt_len + max(request.output_len - 1, 0)


@dataclass
class _Running:
    index: int
    tokens: list[int]  # the kv_len tokens: prompt + output minus the last sampled token
    match_pages: list[int]
    handle: object
    own_pages: list[int]


class _Simulator:
    def __init__(
        self, trace: Trace, config: ReplayConfig, server: ServerModel, before_admit: Callable[[int], None] | None = None
    ) -> None:
        self.trace, self.config, self.server = trace, config, server
        self.before_admit = before_admit
        self.cache = RadixCache(
            config.num_pages + 1,
            config.page_size,
            policy=self.make_policy(),
            shared_namespaces=trace.shared_namespaces,
        )
        n = len(trace)
        self.cached = np.zeros(n, np.int64)
        self.served: list[int] = []
        self.rejected: list[int] = []
        self.peak_pages = 0
        self.peek_tokens: dict[int, list[int]] = {}  # id(waiting request) -> prompt[:-1] (lpm only)

    def make_policy(self) -> EvictionPolicy:
        """The cache's eviction policy (a subclass may wrap it: the tier simulation taps evictions)."""
        return get_policy(self.config.policy)

    def prefix_len(self, request: TraceRequest) -> int:
        # A waiting prompt is peeked at every admission until it runs: convert it to a list once.
        tokens = self.peek_tokens.get(id(request))
        if tokens is None:
            tokens = self.peek_tokens[id(request)] = request.prompt[:-1].tolist()
        return self.cache.peek(tokens, request.namespace)

    def admit(self, index: int) -> _Running | None:
        request, cache = self.trace.requests[index], self.cache
        if self.before_admit is not None:
            self.before_admit(index)
        self.peek_tokens.pop(id(request), None)
        tokens = np.concatenate([request.prompt, request.output[: max(request.output_len - 1, 0)]]).tolist()
        match = cache.match(tokens[: request.prompt_len - 1], request.namespace)
        cache.lock(match.handle)
        prompt_pages = -(-request.prompt_len // self.config.page_size) - len(match.page_ids)
        source = self._partial_page_source(match, tokens[: request.prompt_len - 1], request)
        copied = source.num_tokens if source is not None else 0
        own = self._allocate(
            -(-len(tokens) // self.config.page_size) - len(match.page_ids), prompt_pages, match, source
        )
        if own is None:
            return None
        self.peak_pages = max(self.peak_pages, self.config.num_pages - cache.num_free_pages)
        self.cached[index] = match.num_cached_tokens + copied
        return _Running(index, tokens, list(match.page_ids), match.handle, own)

    def _allocate(self, need: int, prompt_pages: int, match, source) -> list[int] | None:
        """The request's own pages, or None (every lock released) when the pool cannot hold them. With a
        partial-page source, the prompt's pages come while it is locked (the engine's first step copies it,
        then lets it go) and the output's after (the engine grows them while decoding)."""
        cache, own = self.cache, []
        first = min(need, prompt_pages) if source is not None else need
        try:
            own += cache.alloc_pages(first)
            if source is not None:
                cache.unlock(source.handle)
                source = None
            own += cache.alloc_pages(need - first)
        except OutOfPagesError:
            if source is not None:
                cache.unlock(source.handle)
            cache.unlock(match.handle)
            if own:
                cache.free_pages(own)
            return None
        return own

    def _partial_page_source(self, match, tokens, request):
        """As KVManager.acquire_partial_page: the sibling page to copy the next tokens from, locked, or None
        (partial_pages off, no such page, or locking it would leave fewer evictable pages than the prompt
        still needs)."""
        cache = self.cache
        source = cache.partial_page(match.handle, tokens, request.namespace) if self.config.partial_pages else None
        if source is None:
            return None
        needed = -(-request.prompt_len // self.config.page_size) - len(match.page_ids)
        spare = cache.num_free_pages + cache.num_evictable_pages - needed
        return source if lock_partial_source(cache, source, spare) else None

    def finish(self, run: _Running) -> None:
        cache, ps = self.cache, self.config.page_size
        full = len(run.tokens) // ps
        new_full = full - len(run.match_pages)
        private = run.own_pages
        namespace = self.trace.requests[run.index].namespace
        if new_full > 0:
            cache.insert(run.tokens[: full * ps], run.match_pages + run.own_pages[:new_full], namespace)
            private = run.own_pages[new_full:]
        valid = len(run.tokens) - full * ps
        if self.config.partial_pages and valid and private:  # as KVManager.cache_tail_page
            cache.insert(
                run.tokens + [TAIL_PAD] * (ps - valid), run.match_pages + run.own_pages[: new_full + 1], namespace
            )
            private = private[1:]
        cache.unlock(run.handle)
        if private:
            cache.free_pages(private)

    def run_batch(self, queue: WaitingQueue) -> None:
        running: list[_Running] = []
        for index in queue.candidates(self.prefix_len, self.config.page_size):
            if len(running) == self.config.max_batch:
                break
            run = self.admit(index)
            if run is None:
                if running:
                    break  # retried once the running batch has finished
                self.rejected.append(index)
            else:
                running.append(run)
                self.served.append(index)
            queue.remove(index)
        for run in running:
            self.finish(run)
        if queue.timed and running:
            queue.advance(self.batch_seconds(running))
        if self.config.check_integrity:
            self.cache.check_integrity()

    def batch_seconds(self, running: list[_Running]) -> float:
        requests = self.trace.requests
        uncached = sum(requests[r.index].prompt_len - int(self.cached[r.index]) for r in running)
        return self.server.batch_seconds(uncached, max(requests[r.index].output_len for r in running))

    def result(self, wall_s: float) -> ReplayResult:
        stats = self.cache.stats
        trace = self.trace
        prompt_tokens = np.fromiter((r.prompt_len for r in trace.requests), np.int64, len(trace))
        return ReplayResult(
            self.config,
            self.cached,
            prompt_tokens,
            self.served,
            self.rejected,
            stats.evicted_pages,
            stats.inserted_pages,
            self.peak_pages,
            wall_s,
        )

    def run(self) -> None:
        queue = WaitingQueue(self.trace, self.config.order, self.config.window)
        while queue:
            self.run_batch(queue)


def replay(
    trace: Trace,
    config: ReplayConfig,
    server: ServerModel = ServerModel(),
    before_admit: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Replay ``trace`` through a fresh ``RadixCache`` built from ``config``; see the module docstring.

    ``before_admit(trace_index)`` runs before each admission (a clairvoyant policy's clock)."""
    start = time.perf_counter()
    sim = _Simulator(trace, config, server, before_admit)
    sim.run()
    return sim.result(time.perf_counter() - start)
