"""The radix cache's lower tiers in /metrics: hits and bytes per tier, demotions, reloads, refusals.

`tier_metrics(stats)` turns `Engine.tier_stats()` (engine/tiers.py; None without a page store: no series)
into metric families, read at scrape time like the rest of EngineCollector's (plain counter reads):

    trellis_kv_tier_hit_tokens_total{tier}       prompt tokens reloaded from a tier instead of recomputed
                                                 (a tiered store's pages under "host" or "disk")
    trellis_kv_tier_reloaded_pages_total{tier}   ...and their pages, and bytes (_reloaded_bytes_total)
    trellis_kv_demoted_pages_total / _demoted_bytes_total      pages copied from the device pool to the store
    trellis_kv_reload_refusals_total{reason}     demoted pages not reloaded: "cost" (recomputing was cheaper),
                                                 "missing" (the store no longer held them), "store_full"
                                                 (the store refused a demoted page)
    trellis_kv_prefetched_pages_total            persisted pages a restart put onto the device before a request
                                                 asked (engine/prefetch.py)
    trellis_kv_prefetch_dropped_pages_total{reason}   planned pages not prefetched: "refused" (the store
                                                 refused them: damaged, missing), "skipped" (a request
                                                 reloaded them first, or no device page was free)
    trellis_kv_demoted_pages                     gauge: demoted pages in the prefix tree
    trellis_kv_store_pages / trellis_kv_store_bytes            gauges: what the store holds
    trellis_kv_store_refused_corrupt_total       pages the store discarded as damaged or foreign
    trellis_kv_store_stat{stat}                  every number of the store's own stats() (a tiered store's
                                                 host and disk hits among them), as the store counts them
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from trellis_jax.serve.metric_families import counter as _counter
from trellis_jax.serve.metric_families import gauge as _gauge


def tier_metrics(stats: dict | None):
    if stats is None:
        return
    c = stats["counters"]
    for name, doc, table in (
        ("trellis_kv_tier_hit_tokens", "Prompt tokens reloaded from a lower tier", c.hit_tokens),
        ("trellis_kv_tier_reloaded_pages", "KV pages reloaded from a lower tier", c.reloaded_pages),
        ("trellis_kv_tier_reloaded_bytes", "KV bytes reloaded from a lower tier", c.reloaded_bytes),
    ):
        family = CounterMetricFamily(name, doc, labels=["tier"])
        for tier, value in sorted(table.items()):
            family.add_metric([tier], float(value))
        yield family
    yield _counter("trellis_kv_demoted_pages", "KV pages demoted to the page store", c.demoted_pages)
    yield _counter("trellis_kv_demoted_bytes", "KV bytes demoted to the page store", c.demoted_bytes)
    refusals = CounterMetricFamily("trellis_kv_reload_refusals", "Demoted pages not reloaded", labels=["reason"])
    for reason, value in (
        ("cost", c.refused_pages),
        ("missing", c.missing_pages),
        ("store_full", c.store_refused_pages),
    ):
        refusals.add_metric([reason], float(value))
    yield refusals
    yield _counter("trellis_kv_prefetched_pages", "Persisted KV pages prefetched onto the device", c.prefetched_pages)
    dropped = CounterMetricFamily(
        "trellis_kv_prefetch_dropped_pages", "Planned prefetch pages not prefetched", labels=["reason"]
    )
    dropped.add_metric(["refused"], float(c.prefetch_refused_pages))
    dropped.add_metric(["skipped"], float(c.prefetch_skipped_pages))
    yield dropped
    yield _gauge("trellis_kv_demoted_pages", "Demoted pages in the prefix tree", stats["demoted_pages_in_tree"])
    store = stats["store"]
    yield _gauge("trellis_kv_store_pages", "KV pages the page store holds", store.get("pages", 0))
    yield _gauge("trellis_kv_store_bytes", "KV bytes the page store holds", store.get("bytes", 0))
    yield _counter(
        "trellis_kv_store_refused_corrupt",
        "Pages the store discarded as damaged or written under another fingerprint",
        store.get("refused_corrupt", 0),
    )
    own = GaugeMetricFamily("trellis_kv_store_stat", "The page store's own counters (its stats())", labels=["stat"])
    for name, value in sorted(store.items()):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            own.add_metric([name], float(value))
    yield own
