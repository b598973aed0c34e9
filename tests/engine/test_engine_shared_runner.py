"""Engines taking turns on one runner: an engine whose pages another engine overwrote refuses to step."""

import gc
import weakref

import pytest

from trellis_jax.engine.sampling_params import SamplingParams
from trellis_testing.fakes import make_fake_engine

PROMPT = list(range(10, 30))


def _generate(engine, request_id, max_tokens=3):
    engine.add_request(request_id, PROMPT, SamplingParams(temperature=0, max_tokens=max_tokens))
    while engine.scheduler.has_unfinished():
        engine.step()
    return engine.pop_finished()


def test_a_cached_engine_refuses_to_step_after_another_wrote_its_pages():
    first, runner, _, _ = make_fake_engine()
    _generate(first, "a")
    second, *_ = make_fake_engine(runner=runner)
    _generate(second, "b")
    first.add_request("c", PROMPT, SamplingParams(temperature=0, max_tokens=2))
    with pytest.raises(RuntimeError, match="build a new engine"):
        first.step()


def test_a_fresh_engine_may_take_over_the_runner():
    first, runner, _, _ = make_fake_engine()
    _generate(first, "a")
    fresh, *_ = make_fake_engine(runner=runner)
    assert _generate(fresh, "b")[0].outputs[0].finish_reason == "length"
    assert _generate(fresh, "c")[0].outputs[0].num_cached_tokens > 0  # its own cache still holds after the takeover


def test_an_engine_that_refused_keeps_refusing():
    first, runner, _, _ = make_fake_engine()
    _generate(first, "a")
    second, *_ = make_fake_engine(runner=runner)
    _generate(second, "b")
    first.add_request("c", PROMPT, SamplingParams(temperature=0, max_tokens=2))
    for _ in range(2):
        with pytest.raises(RuntimeError, match="build a new engine"):
            first.step()


def test_the_runner_keeps_no_reference_to_the_engines_that_ran_on_it():
    engine, _runner, _, _ = make_fake_engine()  # the runner stays alive: only it could keep the engine alive
    _generate(engine, "a")
    gone = weakref.ref(engine)
    del engine
    gc.collect()
    assert gone() is None


def test_an_idle_engine_without_a_cache_may_be_reused():
    plain, runner, _, _ = make_fake_engine(enable_prefix_cache=False)
    _generate(plain, "a")
    other, *_ = make_fake_engine(runner=runner)
    _generate(other, "b")
    assert _generate(plain, "c")[0].outputs[0].finish_reason == "length"
