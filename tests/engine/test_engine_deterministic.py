"""`deterministic=True` on the real default model: a greedy request's tokens and their logprobs are bitwise
the same run alone, batched with varied other requests at any place, chunked by a small token budget, and
after a partial or a full cache hit (whose last prompt token is recomputed as a decode row).

All engines take turns on one batch-invariant runner with several buckets (compiled once, at warm-up).
Logprobs are compared as well as tokens: equal floats are the property, equal tokens its consequence.
"""

import dataclasses

import pytest

from trellis_jax.engine.api import LLM, EngineConfig, SamplingParams
from trellis_jax.engine.builder import build_engine, make_runner

pytestmark = pytest.mark.slow

SYSTEM = "You are a concise assistant for a hardware store. Answer in one short sentence, and be kind. "
TARGETS = [
    SYSTEM + "Do you sell hammers and nails of every size, and what do they cost?",
    "Write a haiku about a lighthouse keeper who counts the waves every night.",
]
OTHERS = [
    SYSTEM + "Where are the screws?",
    "Tell me a long story about a dragon. " * 5,
    "Hi",
    "Count: 1 2 3 4 5 6 7 8 9 10 11 12 13 14",
    SYSTEM + "Do you sell hammers too?",
]
PARAMS = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, logprobs=0)
# Two buckets, (4 tokens, 4 sequences) and (64, 16): a solo decode takes the first, a batch the second.
CONFIG = EngineConfig(
    num_pages=200,
    max_num_batched_tokens=64,
    max_num_seqs=16,
    deterministic=True,
    token_buckets=(4, 64),
    seq_buckets=(4, 16),
)


@pytest.fixture(scope="module")
def runner(default_model):
    runner = make_runner(CONFIG, default_model)
    assert runner.batch_invariant, "this machine should run the batch-invariant kernels"
    return runner


def _fresh(default_model, runner, **options) -> LLM:
    """A new engine (empty cache) over the shared runner."""
    return LLM.from_engine(*build_engine(dataclasses.replace(CONFIG, **options), default_model, runner))


def _result(output):
    return output.token_ids, [entry.logprob for entry in output.logprobs]


@pytest.fixture(scope="module")
def solo(default_model, runner):
    return [_result(_fresh(default_model, runner).generate(target, PARAMS)[0]) for target in TARGETS]


def test_the_runner_keeps_several_buckets_and_compiles_nothing_after_warm_up(default_model, runner, solo):
    assert len(runner.compiled_buckets) > 1
    compiled = runner.num_compilations
    _fresh(default_model, runner).generate(OTHERS + TARGETS, PARAMS)
    assert runner.num_compilations == compiled


@pytest.mark.parametrize("place", [0, 2, len(OTHERS)])
def test_batched_requests_equal_their_solo_runs(default_model, runner, solo, place):
    prompts = OTHERS[:place] + TARGETS + OTHERS[place:]
    outputs = _fresh(default_model, runner).generate(prompts, PARAMS)
    assert [_result(outputs[place + i]) for i in range(len(TARGETS))] == solo


def test_a_small_token_budget_chunks_prompts_without_changing_a_bit(default_model, runner, solo):
    llm = _fresh(default_model, runner, max_num_batched_tokens=10, max_num_seqs=4)
    outputs = llm.generate(OTHERS[:2] + TARGETS, PARAMS)
    assert [_result(o) for o in outputs[2:]] == solo


def test_a_shared_prefix_from_the_cache_changes_nothing(default_model, runner, solo):
    llm = _fresh(default_model, runner)
    llm.generate(OTHERS[0], PARAMS)  # caches SYSTEM's pages
    output = llm.generate(TARGETS[0], PARAMS)[0]
    assert output.num_cached_tokens > 0
    assert _result(output) == solo[0]


def test_a_full_cache_hit_recomputes_the_last_prompt_token_to_the_same_bits(default_model, runner, solo):
    llm = _fresh(default_model, runner)
    llm.generate(TARGETS, PARAMS)
    again = llm.generate(TARGETS, PARAMS)
    assert all(o.num_cached_tokens == o.num_prompt_tokens - 1 for o in again)
    assert [_result(o) for o in again] == solo
