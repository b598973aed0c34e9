"""How a batch-invariant runner is set up, and the engine builder's choice for `deterministic=True`.

The bit-equality itself is tested on the kernels (tests/kernels/test_*_batch_invariance.py) and end to end
on the default model (tests/engine/test_engine_deterministic.py). Nothing here compiles a step.
"""

from __future__ import annotations

import logging
import types

import pytest
from runner_helpers import TINY

from trellis_jax.engine.builder import make_runner
from trellis_jax.engine.config import EngineConfig
from trellis_jax.runner import Runner, invariance

SMALL = dict(num_pages=32, token_buckets=(8, 16), seq_buckets=(2,), max_context_len=64)


@pytest.fixture
def invariant_kernels(tiny_random_model):
    reason = invariance.batch_invariance_problem(TINY, tiny_random_model[1]["embed"].dtype, "float32", 16)
    if reason:
        pytest.skip(reason)


def test_a_batch_invariant_runner_picks_the_invariant_attention_and_a_matrix_head(tiny_random_model, invariant_kernels):
    runner = Runner(tiny_random_model, batch_invariant=True, **SMALL)
    assert runner.attn_impl == invariance.INVARIANT_ATTENTION
    assert "lm_head" in runner.params  # tied embeddings: the head the native matmul reads


def test_a_batch_invariant_runner_refuses_another_attention(tiny_random_model, invariant_kernels):
    with pytest.raises(ValueError, match="cpu_batch_invariant"):
        Runner(tiny_random_model, batch_invariant=True, attn_impl="xla", **SMALL)


def test_a_batch_invariant_runner_says_why_it_cannot_run(tiny_random_model, monkeypatch):
    monkeypatch.setattr("trellis_jax.runner.runner.batch_invariance_problem", lambda *a: "no kernels on the moon")
    with pytest.raises(ValueError, match="no kernels on the moon"):
        Runner(tiny_random_model, batch_invariant=True, **SMALL)


def _loaded(tiny_random_model):
    return types.SimpleNamespace(config=TINY, params=tiny_random_model[1])


DETERMINISTIC = EngineConfig(
    num_pages=32, max_num_batched_tokens=32, max_num_seqs=4, max_model_len=64, deterministic=True, warmup=False
)


def test_deterministic_keeps_the_usual_buckets_where_the_kernels_run(tiny_random_model, invariant_kernels):
    runner = make_runner(DETERMINISTIC, _loaded(tiny_random_model))
    assert runner.batch_invariant and len(runner.buckets.all()) > 1


def test_deterministic_without_the_kernels_falls_back_to_one_bucket(tiny_random_model, monkeypatch, caplog):
    monkeypatch.setattr(invariance, "batch_invariance_problem", lambda *a: "no kernels on the moon")
    with caplog.at_level(logging.WARNING):
        runner = make_runner(DETERMINISTIC, _loaded(tiny_random_model))
    assert not runner.batch_invariant and runner.buckets.all() == [(32, 4, 4)]
    assert "no kernels on the moon" in caplog.text


def test_the_one_bucket_fallback_refuses_explicit_buckets(tiny_random_model, monkeypatch):
    monkeypatch.setattr(invariance, "batch_invariance_problem", lambda *a: "no kernels on the moon")
    config = EngineConfig(
        num_pages=32,
        max_num_batched_tokens=32,
        max_num_seqs=4,
        max_model_len=64,
        deterministic=True,
        warmup=False,
        token_buckets=(8, 32),
    )
    with pytest.raises(ValueError, match="token_buckets"):
        make_runner(config, _loaded(tiny_random_model))
