"""`Runner.dispatch` / `collect` and the on-device token feed: a PENDING_TOKEN row computes what the same
row with the previous step's sampled token written out computes, in any row of any bucket."""

from __future__ import annotations

import pytest

from trellis_jax.runner import Runner
from trellis_jax.step_plan import PENDING_TOKEN, SequenceWork, StepPlan

PAGE_SIZE = 4


@pytest.fixture(scope="module")
def runner(tiny_random_model):
    return Runner(tiny_random_model, page_size=PAGE_SIZE, num_pages=32, token_buckets=(4, 8), seq_buckets=(2, 4))


PROMPTS = {"a": [5, 6, 7], "b": [9, 10, 11, 12, 13]}
PAGES = {"a": [1, 2], "b": [3, 4, 5]}


def prefill(runner) -> dict:
    """Both prompts in one step; -> their sampled token ids."""
    rows = [SequenceWork(rid, PROMPTS[rid], 0, PAGES[rid], True) for rid in ("a", "b")]
    return {rid: t.token_id for rid, t in runner.run(StepPlan(rows)).tokens.items()}


def decode(rid: str, token: int) -> SequenceWork:
    return SequenceWork(rid, [token], len(PROMPTS[rid]), PAGES[rid], True)


def test_a_pending_row_computes_what_its_host_token_computes(runner):
    first = prefill(runner)
    explicit = runner.run(StepPlan([decode("b", first["b"]), decode("a", first["a"])]))
    prefill(runner)  # the same KV and the same previous step again
    launch = runner.dispatch(StepPlan([decode("b", PENDING_TOKEN), decode("a", PENDING_TOKEN)]))  # rows swapped
    assert runner.collect(launch) == explicit


def test_a_pending_row_of_a_request_the_previous_step_did_not_sample_is_its_error(runner):
    prefill(runner)
    with pytest.raises(ValueError, match="'c': a pending token, but the previous step sampled none"):
        runner.check_plan(StepPlan([SequenceWork("c", [PENDING_TOKEN], 3, [6], True)]))


def test_a_pending_token_must_be_its_rows_only_token(runner):
    prefill(runner)
    with pytest.raises(ValueError, match="must be a row's only token"):
        runner.check_plan(StepPlan([SequenceWork("a", [4, PENDING_TOKEN], 2, PAGES["a"], True)]))
