"""The Runner with the layer loop unrolled (`unroll_layers` N or full): greedy tokens and their logprobs are the
scan's, and nothing compiles after warm-up. A 5-layer random model, so N = 2 leaves a remainder iteration."""

from __future__ import annotations

import dataclasses

import jax
import pytest
from runner_helpers import TINY

from trellis_jax.model import init_params
from trellis_jax.runner import Runner, backend_compile_count
from trellis_jax.step_plan import SequenceWork, StepPlan

FIVE_LAYERS = dataclasses.replace(TINY, num_layers=5)
PROMPT = [5, 17, 42, 8, 99, 23, 61]
TABLE = [2, 1]  # shuffled on purpose
DECODES = 6


@pytest.fixture(scope="module")
def five_layer_model():
    return FIVE_LAYERS, init_params(FIVE_LAYERS, jax.random.key(4), scale=0.5)


def greedy(model, unroll_layers) -> tuple[list[tuple[int, float]], int]:
    """[(token, logprob)] of a prefill and DECODES greedy decodes, and the compiles they took after warm-up."""
    runner = Runner(
        model,
        page_size=8,
        num_pages=3,
        token_buckets=(8,),
        seq_buckets=(1,),
        max_context_len=16,
        unroll_layers=unroll_layers,
    )
    runner.warmup(progress=False)
    before = (runner.num_compilations, backend_compile_count())
    outputs = runner.run(StepPlan([SequenceWork("r", PROMPT, 0, TABLE, True)]))
    sampled = []
    for step in range(DECODES + 1):
        token = outputs.tokens["r"]
        sampled.append((token.token_id, token.logprob))
        if step < DECODES:
            outputs = runner.run(StepPlan([SequenceWork("r", [token.token_id], len(PROMPT) + step, TABLE, True)]))
    compiles = runner.num_compilations - before[0] + backend_compile_count() - before[1]
    return sampled, compiles


@pytest.fixture(scope="module")
def scanned(five_layer_model):
    return greedy(five_layer_model, 1)


@pytest.mark.parametrize("unroll", [2, "full"])
def test_unrolled_runner_samples_the_scans_greedy_tokens(five_layer_model, scanned, unroll):
    sampled, _ = greedy(five_layer_model, unroll)
    assert [token for token, _ in sampled] == [token for token, _ in scanned[0]]
    assert [logprob for _, logprob in sampled] == pytest.approx([logprob for _, logprob in scanned[0]], abs=1e-5)


@pytest.mark.parametrize("unroll", [1, 2, "full"])
def test_unrolled_runner_never_compiles_after_warmup(five_layer_model, scanned, unroll):
    compiles = scanned[1] if unroll == 1 else greedy(five_layer_model, unroll)[1]
    assert compiles == 0


def test_runner_keeps_the_canonical_unroll_value(five_layer_model):
    runner = Runner(
        five_layer_model, page_size=8, num_pages=3, token_buckets=(8,), seq_buckets=(1,), unroll_layers=True
    )
    assert runner.unroll_layers == -1


def test_runner_refuses_a_bad_unroll_value(five_layer_model):
    with pytest.raises(ValueError, match="unroll_layers"):
        Runner(five_layer_model, page_size=8, num_pages=3, token_buckets=(8,), seq_buckets=(1,), unroll_layers="half")
