"""Live mode: the simulator's hit tokens equal the engine's, request by request, evictions included.

First over the engine's fake runner (every policy, fast), then on the real default model (slow: one
compiled bucket, a handful of short requests in a pool small enough to evict).
"""

import pytest

from trellis_jax.ablate.live import compare
from trellis_jax.ablate.synthetic import SyntheticSpec, generate
from trellis_jax.engine.llm import LLM
from trellis_testing.fakes import make_fake_engine


@pytest.mark.parametrize("policy", ["lru", "lfu", "fifo", "mru", "slru", "cost_aware"])
def test_simulator_matches_the_engine_over_the_fake_runner(policy):
    engine, _, _, tokenizer = make_fake_engine(num_pages=40, page_size=4, mode="sum", eviction_policy=policy)
    spec = SyntheticSpec(
        num_requests=40,
        num_prefixes=4,
        prefix_len=24,
        user_len=6,
        output_len=5,
        turns=3,
        concurrent_sessions=3,
        vocab_size=256,
        seed=1,
    )
    result = compare(generate(spec), LLM.from_engine(engine, tokenizer))
    assert result.sim.evicted_pages > 0 and result.sim.hit_tokens > 0
    assert result.mismatches == []


@pytest.mark.slow
def test_simulator_matches_the_engine_on_the_default_model(default_model):
    from trellis_jax.engine.api import EngineConfig
    from trellis_jax.engine.builder import build_engine

    config = EngineConfig(
        num_pages=16,
        page_size=4,
        max_num_batched_tokens=32,
        max_num_seqs=1,
        deterministic=True,
        token_buckets=(32,),
        seq_buckets=(1,),
    )
    llm = LLM.from_engine(*build_engine(config, default_model))
    spec = SyntheticSpec(
        num_requests=10,
        num_prefixes=2,
        prefix_len=20,
        user_len=6,
        output_len=2,
        turns=2,
        concurrent_sessions=2,
        vocab_size=default_model.config.vocab_size,
        seed=2,
    )
    result = compare(generate(spec), llm)
    assert result.sim.evicted_pages > 0 and result.sim.hit_tokens > 0
    assert result.live.cached_tokens.tolist() == result.sim.cached_tokens.tolist()
