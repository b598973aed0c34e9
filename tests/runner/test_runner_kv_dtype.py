"""KV pages in a dtype other than the model's (`Runner(kv_dtype=...)`, `--kv-cache-dtype`).

bfloat16 pages on a float32 model: the pool holds twice the pages for the same budget, the pages really
are bfloat16, and generation follows the float32-KV runner (new K/V are rounded when written, attention
math stays float32, so greedy tokens agree on a short run and logprobs stay close). A dtype the kernels
do not take is refused up front with the choices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from runner_helpers import TINY

from trellis_jax.engine.config import EngineConfig
from trellis_jax.model import init_params
from trellis_jax.runner import Runner
from trellis_jax.step_plan import SequenceWork, StepPlan

PAGE_SIZE = 4


def make_runner(model, kv_dtype, **kwargs):
    return Runner(model, page_size=PAGE_SIZE, token_buckets=(4, 16), seq_buckets=(1, 4), kv_dtype=kv_dtype, **kwargs)


def greedy_run(runner, prompt, steps):
    table = list(range(1, 9))
    outputs = runner.run(StepPlan([SequenceWork("r", prompt, 0, table, True)]))
    tokens, logprobs = [], []
    for _ in range(steps):
        sampled = outputs.tokens["r"]
        tokens.append(sampled.token_id)
        logprobs.append(sampled.logprob)
        position = len(prompt) + len(tokens) - 1
        outputs = runner.run(StepPlan([SequenceWork("r", [sampled.token_id], position, table, True)]))
    return tokens, logprobs


def test_bfloat16_pages_hold_twice_the_tokens_for_the_same_budget(tiny_random_model):
    config, _ = tiny_random_model
    budget = 20 * PAGE_SIZE * config.kv_bytes_per_token("float32")
    f32 = make_runner(tiny_random_model, None, kv_memory_bytes=budget)
    bf16 = make_runner(tiny_random_model, "bfloat16", kv_memory_bytes=budget)
    assert (f32.num_pages, bf16.num_pages) == (20, 40)
    assert f32._kv.k.dtype == jnp.float32 and bf16._kv.k.dtype == jnp.bfloat16


def test_bfloat16_pages_generate_like_float32_pages():
    # Random weights give near-flat logits; key 1's first six greedy tokens have clear margins (key 0's first
    # token, under the Flax init's values, is a near tie that bf16 rounding flips: -1.98 against -2.00).
    model = (TINY, init_params(TINY, jax.random.key(1), scale=0.5))
    prompt = [7, 3, 99, 42, 5, 8, 13, 21, 2]
    f32_tokens, f32_logprobs = greedy_run(make_runner(model, "float32", num_pages=16), prompt, 6)
    bf16_tokens, bf16_logprobs = greedy_run(make_runner(model, "bfloat16", num_pages=16), prompt, 6)
    assert bf16_tokens == f32_tokens
    assert bf16_logprobs == pytest.approx(f32_logprobs, abs=0.05)


def test_an_unsupported_kv_dtype_is_refused(tiny_random_model):
    with pytest.raises(ValueError, match="kv_dtype must be one of"):
        make_runner(tiny_random_model, "int8", num_pages=8)
    with pytest.raises(ValueError, match="kv_cache_dtype must be one of"):
        EngineConfig(kv_cache_dtype="fp8")
