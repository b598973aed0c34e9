"""The engine's default buckets (engine/builder.py) on the real runner (tiny Llama): a batch-1 decode step runs
in the runner's smallest bucket (2 token rows, 2 sequence rows), compiled at warm-up, not in a wider one; a
greedy request's tokens are those it gets with the smallest token bucket at 8."""

from __future__ import annotations

import pytest

from trellis_jax.engine.api import EngineConfig, SamplingParams
from trellis_jax.engine.builder import build_engine, make_runner
from trellis_jax.runner.buckets import Bucket
from trellis_jax.runner.runner import MIN_TOKEN_BUCKET

CONFIG = EngineConfig(num_pages=24, max_num_seqs=4, max_num_batched_tokens=16, max_model_len=128)
GREEDY = SamplingParams(temperature=0, max_tokens=9, ignore_eos=True)
PROMPT = [(7 * j) % 300 + 10 for j in range(13)]


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return tiny_model("llama")


def decode(loaded, config: EngineConfig) -> tuple[list[int], list[Bucket], int]:
    """(tokens, bucket of every step after the first, compilations after warm-up) of one greedy request."""
    runner = make_runner(config, loaded)
    warm = runner.num_compilations
    engine, _ = build_engine(config, loaded, runner)
    buckets = []
    original = runner.dispatch

    def spy(plan):
        launch = original(plan)
        buckets.append(launch.packed.bucket)
        return launch

    runner.dispatch = spy
    engine.add_request("r", PROMPT, GREEDY)
    while engine.has_unfinished():
        engine.step()
    (output,) = engine.pop_finished()
    return output.outputs[0].token_ids, buckets[1:], runner.num_compilations - warm


@pytest.fixture(scope="module")
def default_run(loaded):
    return decode(loaded, CONFIG)


def test_a_batch_1_decode_runs_in_the_smallest_bucket_compiled_at_warm_up(default_run):
    tokens, decode_buckets, compiled_late = default_run
    assert len(tokens) == GREEDY.max_tokens
    assert {(b.num_tokens, b.num_seqs) for b in decode_buckets} == {(MIN_TOKEN_BUCKET, MIN_TOKEN_BUCKET)}
    assert compiled_late == 0


def test_greedy_tokens_match_those_of_an_8_row_smallest_bucket(loaded, default_run):
    wide, decode_buckets, _ = decode(loaded, EngineConfig(**{**CONFIG.__dict__, "token_buckets": (8, 16)}))
    assert {b.num_tokens for b in decode_buckets} == {8}
    assert default_run[0] == wide
