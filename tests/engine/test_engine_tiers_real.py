"""The lower tiers on the real runner (tiny Llama): pages saved to the host and loaded back are bit-identical,
and greedy outputs with reloads equal those of the same small pool recomputing every evicted prefix.

A batch-invariant runner (deterministic=True): a cache hit and a recompute give the same floats, so any
difference comes from a reloaded page that does not hold the KV its key names."""

from __future__ import annotations

import numpy as np
import pytest

from trellis_jax.engine.api import EngineConfig, SamplingParams
from trellis_jax.engine.builder import build_engine, make_runner
from trellis_jax.engine.tiers import TierMover
from trellis_testing.dict_page_store import DictPageStore
from trellis_testing.drive import run_all

CONFIG = EngineConfig(
    num_pages=12,
    page_size=16,
    max_num_seqs=4,
    max_num_batched_tokens=64,
    token_buckets=(8, 64),
    seq_buckets=(2, 4),
    max_model_len=256,
    deterministic=True,
)
GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
SYSTEMS = [[(7 * s + 3 * j) % 250 + 5 for j in range(48)] for s in range(4)]  # 3 pages each; the pool holds 11


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return tiny_model("llama")


@pytest.fixture(scope="module")
def runner(loaded):
    return make_runner(CONFIG, loaded)


def test_saved_pages_load_back_bit_identical(runner):
    rng = np.random.default_rng(0)
    shape = (3, 2, runner.config.num_layers, runner.config.num_kv_heads, 16, runner.config.head_dim)
    pages = rng.standard_normal(shape).astype(runner._kv.k.dtype)
    runner.load_pages([3, 5, 7], pages)
    np.testing.assert_array_equal(runner.save_pages([3, 5, 7]).fetch(), pages)
    np.testing.assert_array_equal(runner.save_pages([7]).fetch()[0], pages[2])


def test_page_ids_out_of_the_pool_are_refused(runner):
    with pytest.raises(ValueError, match="page ids"):
        runner.save_pages([0])
    with pytest.raises(ValueError, match="page ids"):
        runner.save_pages([2, 2])


def serve(loaded, runner, store):
    """Each system prompt with a question, twice round (the second round finds them evicted or demoted);
    -> ([outputs], engine)."""
    engine, _ = build_engine(CONFIG, loaded, runner)
    if store is not None:
        engine.tiers = TierMover(engine.scheduler, runner, store, bytes_per_page=runner.kv_pool.bytes_per_page)
        engine.tiers.cost.prefill_tokens_per_s = 1.0  # reloading always pays, whatever this machine measures
    outputs = []
    for i, s in enumerate([0, 1, 2, 3, 0, 1, 2, 3]):
        engine.add_request(f"r{i}", SYSTEMS[s] + [200 + i, 201, 202], GREEDY)
        outputs.append(run_all(engine)[f"r{i}"].outputs[0])
        engine.scheduler.check_integrity()
    return outputs, engine


def test_reloads_give_the_outputs_of_recomputing(loaded, runner):
    recomputed, _ = serve(loaded, runner, None)
    reloaded, engine = serve(loaded, runner, DictPageStore())
    assert [o.token_ids for o in reloaded] == [o.token_ids for o in recomputed]
    counters = engine.tier_stats()["counters"]
    assert counters.reloaded_pages.get("host", 0) > 0
    assert sum(o.num_cached_tokens for o in reloaded[4:]) > sum(o.num_cached_tokens for o in recomputed[4:])
