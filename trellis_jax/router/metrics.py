"""The router's Prometheus metrics (`GET /metrics`), one registry per app.

Counters: `trellis_router_requests_total{policy,worker,reason}` (routing decisions; reason cache_hit,
imbalance, no_match, round_robin, least_load), `trellis_router_prompt_elements_total{worker,unit}` and
`trellis_router_matched_elements_total{worker,unit}` (key elements routed, and those the chosen worker's
index already held; unit is tokens, or chars without a tokenizer), `trellis_router_retries_total{worker}`
(attempts that failed on that worker before the client saw a byte: refused, cut, or 502/503; the request
moves to another worker while one is left), `trellis_router_stream_errors_total{worker}`
(streams cut after they had started), `trellis_router_upstream_responses_total{worker,status}`.
Gauges read at scrape time: `trellis_router_worker_healthy{worker}`, `trellis_router_in_flight{worker}`,
`trellis_router_index_blocks{worker}`, `trellis_router_imbalance` (in-flight spread across healthy workers).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily

disable_created_metrics()


class RouterMetrics:
    def __init__(self, pool, index, unit: str):
        self.registry = CollectorRegistry()
        r, self.unit = self.registry, unit
        self.decisions = Counter(
            "trellis_router_requests", "Routing decisions", ["policy", "worker", "reason"], registry=r
        )
        self.prompt = Counter(
            "trellis_router_prompt_elements", "Prompt key elements routed", ["worker", "unit"], registry=r
        )
        self.matched = Counter(
            "trellis_router_matched_elements",
            "Prompt key elements the chosen worker's prefix index already held",
            ["worker", "unit"],
            registry=r,
        )
        self.retries = Counter(
            "trellis_router_retries",
            "Attempts that failed on a worker before the client saw a byte",
            ["worker"],
            registry=r,
        )
        self.stream_errors = Counter(
            "trellis_router_stream_errors",
            "Streams cut by a worker failure after they had started",
            ["worker"],
            registry=r,
        )
        self.responses = Counter(
            "trellis_router_upstream_responses", "Worker answers by status", ["worker", "status"], registry=r
        )
        r.register(_PoolCollector(pool, index))

    def routed(self, policy: str, decision, key_length: int) -> None:
        url = decision.worker.url
        self.decisions.labels(policy, url, decision.reason).inc()
        self.prompt.labels(url, self.unit).inc(key_length)
        self.matched.labels(url, self.unit).inc(decision.matched)


class _PoolCollector:
    def __init__(self, pool, index):
        self.pool, self.index = pool, index

    def collect(self):
        healthy = GaugeMetricFamily("trellis_router_worker_healthy", "1 if the worker is routable", labels=["worker"])
        load = GaugeMetricFamily("trellis_router_in_flight", "Requests in flight on the worker", labels=["worker"])
        blocks = GaugeMetricFamily(
            "trellis_router_index_blocks", "Prefix blocks recorded for the worker", labels=["worker"]
        )
        for w in self.pool.all:
            healthy.add_metric([w.url], 1.0 if w.healthy else 0.0)
            load.add_metric([w.url], w.in_flight)
            blocks.add_metric([w.url], self.index.size(w.url))
        spread = GaugeMetricFamily(
            "trellis_router_imbalance",
            "In-flight requests: busiest minus idlest healthy worker",
            value=self.pool.imbalance(),
        )
        return [healthy, load, blocks, spread]
