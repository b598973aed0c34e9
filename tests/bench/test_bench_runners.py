"""Runner logic without real models: Trellis over the engine's fake runner, transformers' cache store."""

import pytest

from tools.bench.requests import BenchRequest
from tools.bench.runners.base import now
from tools.bench.runners.hf import HFRunner
from tools.bench.runners.trellis import TrellisRunner


def _request(rid, ids, wave=0, max_tokens=3):
    return BenchRequest(rid, "w", wave, [], max_tokens, prompt_token_ids=list(ids))


@pytest.fixture
def trellis():
    fakes = pytest.importorskip("trellis_testing.fakes")
    from trellis_jax.engine.api import LLM

    engine, _, _, tokenizer = fakes.make_fake_engine(num_pages=64, page_size=4)
    runner = TrellisRunner(None, cache=True, options={})
    runner.start(llm=LLM.from_engine(engine, tokenizer))
    runner.reset()
    return runner


def test_trellis_requests_generate_exactly_max_tokens(trellis):
    results = trellis.run_wave([_request("a", range(10, 30)), _request("b", range(40, 50))], now())
    assert [r.num_output_tokens for r in results] == [3, 3]
    assert all(r.arrival_s <= r.first_token_s <= r.finish_s for r in results)


def test_trellis_second_wave_skips_the_cached_prefix(trellis):
    t0 = now()
    trellis.run_wave([_request("a", range(10, 30))], t0)
    (second,) = trellis.run_wave([_request("b", list(range(10, 30)) + [99, 98])], t0)
    assert second.prompt_tokens_computed == 22 - 20  # 20 cached tokens = 5 whole pages of 4
    assert trellis.stats()["cache_hit_rate"] == pytest.approx(20 / 42)


def test_trellis_reset_makes_the_next_run_cold(trellis):
    trellis.run_wave([_request("a", range(10, 30))], now())
    trellis.reset()
    (again,) = trellis.run_wave([_request("b", range(10, 30))], now())
    assert again.prompt_tokens_computed == 20


class _FakeCache:
    def __init__(self, n):
        self.n = n

    def get_seq_length(self):
        return self.n

    def crop(self, tokens_to_remove):
        assert tokens_to_remove <= 0
        self.n += tokens_to_remove


def _hf(store_bytes=1 << 30):
    runner = HFRunner(lambda: None, reuse=True, store_bytes=store_bytes)
    runner._bytes_per_token = 1
    return runner


def test_hf_reuse_takes_the_longest_stored_prefix_cropped_to_it():
    runner = _hf()
    runner._keep((1, 2, 3, 4), _FakeCache(7))
    runner._keep((1, 2, 9, 9, 9), _FakeCache(8))
    cache, reused = runner._cache_for([1, 2, 3, 5, 6])
    assert reused == 3 and cache.get_seq_length() == 3


def test_hf_reuse_leaves_one_prompt_token_to_compute():
    runner = _hf()
    runner._keep((1, 2, 3), _FakeCache(5))
    cache, reused = runner._cache_for([1, 2, 3])
    assert reused == 2 and cache.get_seq_length() == 2


def test_hf_store_drops_oldest_caches_beyond_its_budget():
    runner = _hf(store_bytes=10)
    runner._keep((1,) * 6, _FakeCache(6))
    runner._keep((2,) * 6, _FakeCache(6))
    assert list(runner._store) == [(2,) * 6]
