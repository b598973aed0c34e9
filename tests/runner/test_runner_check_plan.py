"""`Runner.check_plan`: the host half of `run` (pack + wire encode), raising what `run` would raise
before it touches the device, and doing nothing else (the engine's failure isolation relies on it)."""

from __future__ import annotations

import pytest

from trellis_jax.runner import Runner
from trellis_jax.step_plan import SamplingArrays, SequenceWork, StepPlan

PAGE_SIZE = 4


@pytest.fixture(scope="module")
def runner(tiny_random_model):
    return Runner(tiny_random_model, page_size=PAGE_SIZE, num_pages=16, token_buckets=(4,), seq_buckets=(2,))


def row(request_id="a", tokens=(1, 2, 3), **sampling) -> SequenceWork:
    return SequenceWork(request_id, list(tokens), 0, [1], True, SamplingArrays(**sampling))


def test_a_valid_plan_passes_without_compiling_or_touching_the_pages(runner):
    kv = runner._kv
    runner.check_plan(StepPlan([row()]))
    assert runner.num_compilations == 0 and runner._kv is kv


@pytest.mark.parametrize(
    ("work", "message"),
    [
        (row(top_k=2**31), r"top_k=2147483648 \(need an integer in \[-1, 2147483647\]\)"),
        (row(temperature=float("nan")), "temperature=nan"),
        (row(repetition_penalty=1e39), r"repetition_penalty=1e\+39 \(need a finite number in \(0.0, "),
        (row(tokens=(1, 2**40)), r"token ids must be in \[0, 101\)"),
    ],
)
def test_what_run_would_reject_is_raised_on_the_host(runner, work, message):
    with pytest.raises(ValueError, match=message):
        runner.check_plan(StepPlan([work]))
    assert runner.num_compilations == 0
