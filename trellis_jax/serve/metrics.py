"""Prometheus metrics (`GET /metrics`), one registry per app.

Per-request figures are recorded by `RequestMetrics` as deltas stream in (TTFT, inter-token latency,
end-to-end latency, tokens, prefix-cache query/hit tokens, FLOPs saved, KV bytes re-read). Engine state
is read at scrape time by `EngineCollector` (pages free/evictable/locked/private, running/waiting,
preemptions, evictions, compilations) together with live utilisation: prefill MFU and decode
memory-bandwidth utilisation over the interval since the previous scrape, against the device ceilings.
Reads of engine state are plain attribute reads of counters (safe from the event-loop thread).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from trellis_jax.serve.costs import Ceilings, CostModel

disable_created_metrics()  # the *_created series only add noise to a scrape

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServerMetrics:
    def __init__(self, engine, cost: CostModel, ceilings: Ceilings | None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("trellis_requests", "Finished HTTP requests", ["endpoint", "status"], registry=r)
        self.ttft = Histogram("trellis_time_to_first_token_seconds", "Time to first token", buckets=_LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("trellis_inter_token_latency_seconds", "Time between output tokens", buckets=_LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("trellis_e2e_request_latency_seconds", "Request latency", buckets=_LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("trellis_prompt_tokens", "Prompt tokens", registry=r)
        self.generation_tokens = Counter("trellis_generation_tokens", "Generated tokens", registry=r)
        self.cache_queries = Counter("trellis_prefix_cache_queries_tokens", "Prompt tokens looked up in the prefix cache", registry=r)
        self.cache_hits = Counter("trellis_prefix_cache_hits_tokens", "Prompt tokens served from the prefix cache", registry=r)
        self.flops_saved = Counter("trellis_prefill_flops_saved", "Prefill FLOPs avoided by prefix-cache hits", registry=r)
        self.kv_bytes_reread = Counter("trellis_kv_bytes_reread", "Cached KV bytes reused instead of recomputed", registry=r)
        self.prefill_flops = Counter("trellis_prefill_flops_computed", "Prefill FLOPs computed", registry=r)
        self.decode_bytes = Counter("trellis_decode_bytes_read", "Bytes read by decode tokens (KV + weight share)", registry=r)
        self.disconnects = Counter("trellis_client_disconnects", "Requests aborted because the client left", registry=r)
        self.responses = Counter("trellis_http_responses", "HTTP responses by route and status code",
                                 ["path", "status"], registry=r)
        self.prefill_flops_total = 0.0  # plain mirrors of the two counters, for the utilisation gauges
        self.decode_bytes_total = 0.0
        self.collector = EngineCollector(engine, self, ceilings)
        r.register(self.collector)

    def add_prefill_flops(self, flops: float) -> None:
        self.prefill_flops.inc(flops)
        self.prefill_flops_total += flops

    def add_decode_bytes(self, num_bytes: float) -> None:
        self.decode_bytes.inc(num_bytes)
        self.decode_bytes_total += num_bytes


class EngineCollector:
    """Scrape-time view of the engine; utilisation over the interval since the previous scrape."""

    def __init__(self, engine, metrics: ServerMetrics, ceilings: Ceilings | None):
        self.engine = engine
        self.metrics = metrics
        self.ceilings = ceilings
        self._last = (time.monotonic(), 0.0, 0.0)

    def collect(self):
        inner = getattr(self.engine, "engine", None)
        scheduler = getattr(inner, "scheduler", None)
        if scheduler is not None:
            yield from self._scheduler_metrics(scheduler)
        runner = getattr(inner, "runner", None)
        compilations = CounterMetricFamily("trellis_compilations", "Step compilations by the runner")
        compilations.add_metric([], float(getattr(runner, "num_compilations", 0)))
        yield compilations
        yield from self._utilisation()

    def _scheduler_metrics(self, scheduler):
        cache = scheduler.kv.cache
        pages = GaugeMetricFamily("trellis_kv_pages", "KV pages by state", labels=["state"])
        for state, value in (("free", cache.num_free_pages), ("evictable", cache.num_evictable_pages),
                             ("locked", cache.num_locked_pages), ("private", cache.num_private_pages),
                             ("total", cache.num_pages)):
            pages.add_metric([state], float(value))
        yield pages
        requests = GaugeMetricFamily("trellis_scheduler_requests", "Requests in the scheduler", labels=["state"])
        requests.add_metric(["running"], float(len(scheduler.running)))
        requests.add_metric(["waiting"], float(len(scheduler.waiting)))
        yield requests
        stats = cache.stats
        for name, doc, value in (
            ("trellis_preemptions", "Requests preempted (recompute)", scheduler.stats.num_preemptions),
            ("trellis_evicted_pages", "Cache pages evicted", stats.evicted_pages),
            ("trellis_prefix_cache_partial_page_tokens", "Cached prompt tokens copied from part of a cached page",
             scheduler.stats.num_partial_page_tokens),
            ("trellis_lookup_draft_tokens", "Tokens guessed by prompt lookup and verified",
             scheduler.stats.num_draft_tokens),
            ("trellis_lookup_accepted_tokens", "Guessed tokens the model agreed with (kept)",
             scheduler.stats.num_accepted_draft_tokens),
        ):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], float(value))
            yield family

    def _utilisation(self):
        now = time.monotonic()
        flops = self.metrics.prefill_flops_total
        read = self.metrics.decode_bytes_total
        then, flops_then, read_then = self._last
        self._last = (now, flops, read)
        if self.ceilings is None or now <= then:
            return
        mfu = GaugeMetricFamily("trellis_prefill_mfu", "Prefill FLOP/s over the last scrape interval / device peak")
        mfu.add_metric([], (flops - flops_then) / (now - then) / self.ceilings.flops_per_s)
        mbu = GaugeMetricFamily("trellis_decode_bandwidth_utilisation", "Decode bytes/s over the last scrape interval / device peak")
        mbu.add_metric([], (read - read_then) / (now - then) / self.ceilings.bytes_per_s)
        yield mfu
        yield mbu


class RequestMetrics:
    """Timing and token accounting of one API request (all its prompts and choices)."""

    def __init__(self, metrics: ServerMetrics, cost: CostModel, running_batch=lambda: 1):
        self.metrics = metrics
        self.cost = cost
        self.running_batch = running_batch
        self.start = time.monotonic()
        self.first_token_at: float | None = None
        self._last_token_at: dict[tuple[int, int], float] = {}

    def on_delta(self, group: int, delta) -> None:
        """A delta of choice `delta.index` of prompt `group` arrived."""
        if not delta.token_ids:
            return
        now = time.monotonic()
        if self.first_token_at is None:
            self.first_token_at = now
            self.metrics.ttft.observe(now - self.start)
        key = (group, delta.index)
        if key in self._last_token_at:
            gap = (now - self._last_token_at[key]) / len(delta.token_ids)
            for _ in delta.token_ids:
                self.metrics.itl.observe(gap)
        self._last_token_at[key] = now
        self.metrics.generation_tokens.inc(len(delta.token_ids))
        context = delta.num_prompt_tokens + delta.num_output_tokens
        self.metrics.add_decode_bytes(self.cost.decode_bytes(context, self.running_batch()) * len(delta.token_ids))

    def on_prompt_done(self, num_prompt_tokens: int, num_cached: int) -> None:
        m = self.metrics
        m.prompt_tokens.inc(num_prompt_tokens)
        m.cache_queries.inc(num_prompt_tokens)
        m.cache_hits.inc(num_cached)
        m.flops_saved.inc(self.cost.flops_saved(num_cached))
        m.kv_bytes_reread.inc(self.cost.kv_bytes_reread(num_cached))
        m.add_prefill_flops(self.cost.prefill_flops(num_prompt_tokens, num_cached))

    def finish(self, endpoint: str, status: str) -> None:
        self.metrics.e2e.observe(time.monotonic() - self.start)
        self.metrics.requests.labels(endpoint, status).inc()


class ResponseCounter:
    """ASGI middleware counting every HTTP response by path and status, errors included (a 400 from
    validation never reaches a handler, so it is counted here). Unknown paths share one label."""

    def __init__(self, app, metrics: ServerMetrics, known_paths: frozenset[str]):
        self.app = app
        self.metrics = metrics
        self.known_paths = known_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        label = path if path in self.known_paths else "other"

        async def counting_send(message):
            if message["type"] == "http.response.start":
                self.metrics.responses.labels(label, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)
