"""Failure isolation through the real packing code: on the tiny random Llama (one compiled bucket, so a
sequence's floats do not depend on its batch), a request that reaches the step with a value packing
rejects or cannot carry fails alone, and the others decode exactly the tokens they get without it."""

from __future__ import annotations

import pytest

from trellis_jax.engine.api import EngineConfig, SamplingParams
from trellis_jax.engine.builder import build_engine, make_runner
from trellis_jax.engine.engine import RequestFailed
from trellis_testing.drive import run_all

pytestmark = pytest.mark.slow

CONFIG = EngineConfig(
    dtype="float32", deterministic=True, max_num_seqs=8, max_num_batched_tokens=32, num_pages=96, max_model_len=128
)
GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
VICTIMS = {f"v{i}": [5 + i, 40 + 3 * i, 7, 90 + i, 11] for i in range(6)}


def forced(params: SamplingParams, **values) -> SamplingParams:
    """SamplingParams holding values validation refuses (as a bug upstream of the step would)."""
    for name, value in values.items():
        object.__setattr__(params, name, value)
    return params


POISONS = {
    "token id past the vocabulary": ([5, 2**40, 6], GREEDY),
    "top_k past int32": ([5, 6, 7], forced(GREEDY.with_updates(), top_k=2**31)),
    "nan temperature": ([5, 6, 7], forced(GREEDY.with_updates(), temperature=float("nan"))),
}


@pytest.fixture(scope="module")
def shared(tiny_model):
    loaded = tiny_model("llama")
    return loaded, make_runner(CONFIG, loaded)


def fresh_engine(shared):
    loaded, runner = shared
    return build_engine(CONFIG, loaded, runner)[0]


@pytest.fixture(scope="module")
def without_poison(shared):
    engine = fresh_engine(shared)
    for rid, prompt in VICTIMS.items():
        engine.add_request(rid, prompt, GREEDY)
    return {rid: o.outputs[0].token_ids for rid, o in run_all(engine).items()}


@pytest.mark.parametrize("poison", list(POISONS))
def test_poison_fails_alone_and_the_others_decode_the_same_tokens(shared, without_poison, poison):
    engine = fresh_engine(shared)
    for rid, prompt in VICTIMS.items():
        engine.add_request(rid, prompt, GREEDY)
    engine.step()
    engine.step()
    prompt, sampling = POISONS[poison]
    engine.add_request("poison", prompt, sampling)
    outputs = run_all(engine)
    assert {rid: outputs[rid].outputs[0].token_ids for rid in VICTIMS} == without_poison
    assert outputs["poison"].outputs[0].finish_reason == "abort"
    failure = engine.pop_failures()["poison"]
    assert isinstance(failure, RequestFailed) and "poison" in str(failure)
    cache = engine.scheduler.kv.cache
    cache.check_integrity()
    assert cache.num_locked_pages == 0 and cache.num_private_pages == 0
