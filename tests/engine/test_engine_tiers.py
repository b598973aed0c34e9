"""The engine's lower tiers over the fake runner: evicted prefix pages go to the page store, a later request
reloads them instead of recomputing, and every output equals a run whose pool never evicts.

The fake runner's "sum" mode reads every token back through the page table, so a page reloaded into the wrong
place, saved after it was overwritten, or never loaded changes the output."""

from __future__ import annotations

import pytest

from trellis_jax.cache.tree import iter_nodes
from trellis_jax.engine.api import SamplingParams
from trellis_testing.dict_page_store import DictPageStore
from trellis_testing.drive import run_all
from trellis_testing.fakes import make_fake_engine

GREEDY = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
SYSTEM = [[30 + s] * 3 + list(range(40 + s, 61 + s)) for s in range(4)]  # four 24-token system prompts


def prompts() -> list[list[int]]:
    """Each system prompt with two questions, visited twice: the pool holds about one system prompt, so
    every revisit finds its pages evicted."""
    order = [0, 1, 2, 3, 0, 1, 2, 3]
    return [SYSTEM[s] + [100 + i, 101 + i, 102, 103, 104] for i, s in enumerate(order)]


def serve(num_pages: int, store=None, overlap: bool = False, **options):
    """Each prompt alone, one after the other. -> ([(tokens, cached tokens)], engine, runner, cache)."""
    engine, runner, cache, _ = make_fake_engine(
        num_pages=num_pages, page_size=4, page_store=store, overlap=overlap, max_num_batched_tokens=64, **options
    )
    results = []
    for i, prompt in enumerate(prompts()):
        engine.add_request(f"r{i}", prompt, GREEDY)
        out = run_all(engine)[f"r{i}"].outputs[0]
        results.append((out.token_ids, out.num_cached_tokens))
        cache.check_integrity()
    return results, engine, runner, cache


def tokens(results):
    return [t for t, _ in results]


@pytest.mark.parametrize("overlap", [False, True])
def test_reloaded_prefixes_give_the_outputs_of_a_pool_that_never_evicts(overlap):
    unlimited, *_ = serve(num_pages=256)
    tiered, engine, runner, cache = serve(num_pages=12, store=DictPageStore(), overlap=overlap)
    assert tokens(tiered) == tokens(unlimited)
    counters = engine.tier_stats()["counters"]
    assert counters.reloaded_pages["host"] > 0 and runner.num_pages_loaded == sum(counters.reloaded_pages.values())
    assert sum(cached for _, cached in tiered[4:]) > 0  # the revisits hit what the pool alone had evicted


def test_without_a_store_the_small_pool_recomputes():
    l1_only, engine, runner, _ = serve(num_pages=12)
    assert sum(cached for _, cached in l1_only[4:]) == 0 and engine.tier_stats() is None


def test_eviction_demotes_into_the_store():
    store = DictPageStore()
    _, engine, _, cache = serve(num_pages=12, store=store)
    counters = engine.tier_stats()["counters"]
    assert counters.demoted_pages == store.stats()["pages"] > 0
    assert counters.demoted_bytes == counters.demoted_pages  # one byte a page in the fake engine
    assert counters.resaved_pages_skipped > 0  # reloaded pages demoted again are not copied twice
    demoted_keys = [k for node in iter_nodes(cache._root) if node.tier is not None for k in node.page_keys]
    assert demoted_keys and all(key in store for key in demoted_keys)


def test_the_cost_model_recomputes_when_reloading_is_slower():
    store = DictPageStore()
    engine, runner, cache, _ = make_fake_engine(num_pages=12, page_size=4, page_store=store)
    engine.tiers.cost.h2d_bytes_per_s = 1e-9  # a page would take ages to load
    for i, prompt in enumerate(prompts()):
        engine.add_request(f"r{i}", prompt, GREEDY)
        run_all(engine)
    counters = engine.tier_stats()["counters"]
    assert counters.refused_pages > 0 and not counters.reloaded_pages and runner.num_pages_loaded == 0


def test_a_page_the_store_lost_is_recomputed_and_leaves_the_tree():
    unlimited, *_ = serve(num_pages=256)
    store = DictPageStore()
    engine, runner, cache, _ = make_fake_engine(num_pages=12, page_size=4, page_store=store)
    results = []
    for i, prompt in enumerate(prompts()):
        if i == 4:  # before the first revisit: the store loses the second page of every system prompt
            for entry in list(store.entries()):
                if entry.parent is not None and store_parent_is_root(store, entry):
                    store.lose(entry.key)
        engine.add_request(f"r{i}", prompt, GREEDY)
        out = run_all(engine)[f"r{i}"].outputs[0]
        results.append(out.token_ids)
        cache.check_integrity()
    assert results == tokens(unlimited)
    assert engine.tier_stats()["counters"].missing_pages > 0


def store_parent_is_root(store, entry) -> bool:
    return any(e.key == entry.parent and e.parent is None for e in store.entries())


def test_a_restart_reloads_from_the_store_it_left():
    """A new engine (fresh pool and tree) over the same store rebuilds the demoted paths and hits them."""
    unlimited, *_ = serve(num_pages=256)
    store = DictPageStore()
    serve(num_pages=12, store=store)
    engine, runner, cache, _ = make_fake_engine(num_pages=12, page_size=4, page_store=store)
    assert engine.tiers.rebuild() > 0
    engine.add_request("again", prompts()[7], GREEDY)
    out = run_all(engine)["again"].outputs[0]
    assert out.token_ids == unlimited[7][0] and out.num_cached_tokens >= 4
    assert runner.num_pages_loaded > 0
    cache.check_integrity()


def test_a_flush_drops_demoted_pages_too():
    _, engine, _, cache = serve(num_pages=12, store=DictPageStore())
    assert cache.tier_stats.demoted_pages > 0
    engine.flush_cache()
    assert cache.tier_stats.demoted_pages == 0
