"""Prometheus metrics (`GET /metrics`), one registry per app; every series carries a `model` label.

Names follow Prometheus conventions: the unit last (`_seconds`, `_bytes`, `_tokens`, `_flops`, `_pages`),
`_total` on counters, `_ratio` on ratios in [0, 1]. Per-request figures are recorded by `RequestMetrics`
as deltas stream in (TTFT, inter-token latency, end-to-end latency, tokens, prefix-cache query/hit
tokens, FLOPs saved, KV bytes re-read, prefill FLOPs, decode bytes). Engine state is read at scrape
time by `EngineCollector`: pages by state, running/waiting requests, the scheduler's queue-time histogram
(add_request -> first admission), preemptions, evictions, compilations, the admission cap's state, and the
prefix cache's lower tiers (tier_metrics.py).
Ratio gauges are derived from cumulative counters, so they are the same whoever scrapes and however
often: prefix-cache hit ratio, prompt-lookup acceptance ratio, KV pool use. Utilisation over an interval
is the scraper's to take: with known device ceilings, `trellis_device_peak_flops_per_second` and
`trellis_device_peak_bytes_per_second` are exported, so MFU is
`rate(trellis_prefill_computed_flops_total[1m]) / trellis_device_peak_flops_per_second`.
Reads of engine state are plain attribute reads of counters (safe from the event-loop thread).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from trellis_jax.serve.costs import Ceilings, CostModel
from trellis_jax.serve.metric_families import counter as _counter
from trellis_jax.serve.metric_families import gauge as _gauge
from trellis_jax.serve.tier_metrics import tier_metrics

disable_created_metrics()  # the *_created series only add noise to a scrape

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServerMetrics:
    """`registry` is what /metrics exposes: every metric of `own` (the counters and histograms below, and
    the engine collector) with the `model` label added."""

    def __init__(self, engine, cost: CostModel, ceilings: Ceilings | None, *, model: str = "default", admission=None):
        self.own = CollectorRegistry()
        r = self.own
        self.requests = Counter("trellis_requests", "Finished HTTP requests", ["endpoint", "status"], registry=r)
        self.ttft = Histogram(
            "trellis_time_to_first_token_seconds", "Time to first token", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.itl = Histogram(
            "trellis_inter_token_latency_seconds", "Time between output tokens", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.e2e = Histogram(
            "trellis_e2e_request_latency_seconds", "Request latency", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.prompt_tokens = Counter("trellis_prompt_tokens", "Prompt tokens", registry=r)
        self.generation_tokens = Counter("trellis_generation_tokens", "Generated tokens", registry=r)
        self.cache_queries = Counter(
            "trellis_prefix_cache_queried_tokens", "Prompt tokens looked up in the prefix cache", registry=r
        )
        self.cache_hits = Counter(
            "trellis_prefix_cache_hit_tokens", "Prompt tokens served from the prefix cache", registry=r
        )
        self.flops_saved = Counter(
            "trellis_prefill_saved_flops", "Prefill FLOPs avoided by prefix-cache hits", registry=r
        )
        self.kv_bytes_reread = Counter(
            "trellis_kv_reread_bytes", "Cached KV bytes reused instead of recomputed", registry=r
        )
        self.prefill_flops = Counter("trellis_prefill_computed_flops", "Prefill FLOPs computed", registry=r)
        self.decode_bytes = Counter(
            "trellis_decode_read_bytes", "Bytes read by decode tokens (KV + weight share)", registry=r
        )
        self.disconnects = Counter("trellis_client_disconnects", "Requests aborted because the client left", registry=r)
        self.responses = Counter(
            "trellis_http_responses", "HTTP responses by route and status code", ["path", "status"], registry=r
        )
        self.queried_tokens = self.hit_tokens = 0
        self.collector = EngineCollector(engine, self, ceilings, admission)
        r.register(self.collector)
        self.registry = CollectorRegistry()
        self.registry.register(_WithLabel(self.own, "model", model))

    def add_prompt_lookup(self, num_queried: int, num_hit: int) -> None:
        self.cache_queries.inc(num_queried)
        self.cache_hits.inc(num_hit)
        self.queried_tokens += num_queried  # plain mirrors of the two counters, for the hit ratio
        self.hit_tokens += num_hit

    def add_prefill_flops(self, flops: float) -> None:
        self.prefill_flops.inc(flops)

    def add_decode_bytes(self, num_bytes: float) -> None:
        self.decode_bytes.inc(num_bytes)


class _WithLabel:
    """Every sample of `registry` with one more label (a constant), for a single exposition."""

    def __init__(self, registry: CollectorRegistry, name: str, value: str):
        self.registry, self.name, self.value = registry, name, value

    def collect(self):
        for family in self.registry.collect():
            family.samples = [s._replace(labels={self.name: self.value, **s.labels}) for s in family.samples]
            yield family


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


class EngineCollector:
    """Scrape-time view of the engine, the admission cap and the counters' ratios; nothing here resets."""

    def __init__(self, engine, metrics: ServerMetrics, ceilings: Ceilings | None, admission=None):
        self.engine = engine
        self.metrics = metrics
        self.ceilings = ceilings
        self.admission = admission

    def collect(self):
        inner = getattr(self.engine, "engine", None)
        scheduler = getattr(inner, "scheduler", None)
        if scheduler is not None:
            yield from self._scheduler_metrics(scheduler)
        if getattr(inner, "tier_stats", None) is not None:
            yield from tier_metrics(inner.tier_stats())
        runner = getattr(inner, "runner", None)
        yield _counter(
            "trellis_compilations", "Step compilations by the runner", getattr(runner, "num_compilations", 0)
        )
        yield _gauge(
            "trellis_prefix_cache_hit_ratio",
            "Prompt tokens served from the prefix cache / looked up (since start)",
            _ratio(self.metrics.hit_tokens, self.metrics.queried_tokens),
        )
        if self.admission is not None:
            yield from self._admission_metrics()
        if self.ceilings is not None:
            yield _gauge(
                "trellis_device_peak_flops_per_second", "Device peak dense FLOP/s (for MFU)", self.ceilings.flops_per_s
            )
            yield _gauge(
                "trellis_device_peak_bytes_per_second",
                "Device memory bandwidth (for bandwidth use)",
                self.ceilings.bytes_per_s,
            )

    def _admission_metrics(self):
        yield _gauge(
            "trellis_server_requests",
            "Generation requests the server holds (running or waiting)",
            self.admission.in_flight,
        )
        yield _gauge(
            "trellis_server_request_capacity",
            "Requests the server holds at most (running + waiting cap)",
            self.admission.capacity,
        )
        yield _counter("trellis_rejected_requests", "Requests refused with 429 (queue full)", self.admission.rejected)

    def _scheduler_metrics(self, scheduler):
        cache = scheduler.kv.cache
        pages = GaugeMetricFamily("trellis_kv_pages", "KV pages by state", labels=["state"])
        for state, value in (
            ("free", cache.num_free_pages),
            ("evictable", cache.num_evictable_pages),
            ("locked", cache.num_locked_pages),
            ("private", cache.num_private_pages),
            ("total", cache.num_pages),
        ):
            pages.add_metric([state], float(value))
        yield pages
        in_use = cache.num_locked_pages + cache.num_private_pages
        yield _gauge(
            "trellis_kv_pages_in_use_ratio", "KV pages held by requests / all pages", _ratio(in_use, cache.num_pages)
        )
        requests = GaugeMetricFamily("trellis_scheduler_requests", "Requests in the scheduler", labels=["state"])
        requests.add_metric(["running"], float(len(scheduler.running)))
        requests.add_metric(["waiting"], float(len(scheduler.waiting)))
        yield requests
        stats = scheduler.stats
        yield _queue_time(stats.queue_time_s)
        yield _counter("trellis_preemptions", "Requests preempted (recompute)", stats.num_preemptions)
        yield _counter("trellis_evicted_pages", "Cache pages evicted", cache.stats.evicted_pages)
        yield _counter(
            "trellis_prefix_cache_partial_page_tokens",
            "Cached prompt tokens copied from part of a cached page",
            stats.num_partial_page_tokens,
        )
        yield _counter(
            "trellis_lookup_draft_tokens", "Tokens guessed by prompt lookup and verified", stats.num_draft_tokens
        )
        yield _counter(
            "trellis_lookup_accepted_tokens",
            "Guessed tokens the model agreed with (kept)",
            stats.num_accepted_draft_tokens,
        )
        yield _gauge(
            "trellis_lookup_acceptance_ratio",
            "Guessed tokens kept / verified (since start)",
            _ratio(stats.num_accepted_draft_tokens, stats.num_draft_tokens),
        )


def _queue_time(histogram) -> HistogramMetricFamily:
    """The scheduler's queue-time histogram (seconds from add_request to first admission)."""
    counts = list(histogram.counts)  # read before count: observe() bumps the buckets first, so +Inf >= each
    buckets = [(str(float(bound)), float(n)) for bound, n in zip(histogram.bounds, counts, strict=True)]
    buckets.append(("+Inf", float(histogram.count)))
    return HistogramMetricFamily(
        "trellis_queue_time_seconds",
        "Time requests waited in the scheduler before their first step",
        buckets=buckets,
        sum_value=histogram.sum,
    )


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
        m.add_prompt_lookup(num_prompt_tokens, num_cached)
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
