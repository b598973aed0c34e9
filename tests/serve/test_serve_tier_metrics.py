"""/metrics series of the prefix cache's lower tiers (serve/tier_metrics.py), from a fake engine that demotes
and reloads: hits and bytes per tier, demotions, refusals; nothing without a page store."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trellis_jax.engine.api import SamplingParams
from trellis_jax.serve.tier_metrics import tier_metrics
from trellis_testing.dict_page_store import DictPageStore
from trellis_testing.drive import run_all
from trellis_testing.fakes import make_fake_engine

GREEDY = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)


class _Collector:
    def __init__(self, engine) -> None:
        self.engine = engine

    def collect(self):
        yield from tier_metrics(self.engine.tier_stats())


def scrape(engine) -> dict[tuple, float]:
    registry = CollectorRegistry()
    registry.register(_Collector(engine))
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def busy_engine(store):
    engine, *_ = make_fake_engine(num_pages=12, page_size=4, page_store=store)
    systems = [[30 + s] * 20 for s in range(3)]
    for i, s in enumerate([0, 1, 2, 0, 1, 2]):
        engine.add_request(f"r{i}", systems[s] + [100 + i, 101], GREEDY)
        run_all(engine)
    return engine


def test_tier_series_count_reloads_and_demotions():
    store = DictPageStore()
    samples = scrape(busy_engine(store))
    host = (("tier", "host"),)
    assert samples[("trellis_kv_tier_hit_tokens_total", host)] > 0
    assert (
        samples[("trellis_kv_tier_reloaded_pages_total", host)] * 4
        == samples[("trellis_kv_tier_hit_tokens_total", host)]
    )
    assert samples[("trellis_kv_demoted_pages_total", ())] == store.stats()["pages"] > 0
    assert samples[("trellis_kv_store_pages", ())] == store.stats()["pages"]
    assert samples[("trellis_kv_reload_refusals_total", (("reason", "cost"),))] == 0
    assert samples[("trellis_kv_store_stat", (("stat", "hits"),))] == store.stats()["hits"] > 0


def test_cost_refusals_are_counted():
    store = DictPageStore()
    engine, *_ = make_fake_engine(num_pages=12, page_size=4, page_store=store)
    engine.tiers.cost.h2d_bytes_per_s = 1e-9
    for i, s in enumerate([0, 1, 2, 0]):
        engine.add_request(f"r{i}", [30 + s] * 20 + [7], GREEDY)
        run_all(engine)
    assert scrape(engine)[("trellis_kv_reload_refusals_total", (("reason", "cost"),))] > 0


def test_no_series_without_a_page_store():
    engine, *_ = make_fake_engine(num_pages=12, page_size=4)
    assert scrape(engine) == {}
