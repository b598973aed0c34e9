"""Multi-step decode in the runner (Runner(decode_steps=k), StepPlan.decode_steps): k iterations in one call
sample what k single decode steps sample, seeded sampling included; positions a row holds no page for go to
the sink page and touch no other page; warm-up compiles one program per decode bucket and then nothing
compiles; a plan the multi-step program cannot honour is a ValueError."""

from __future__ import annotations

import numpy as np
import pytest

from trellis_jax.runner import Runner, backend_compile_count
from trellis_jax.runner.buckets import BucketSet
from trellis_jax.runner.packing import pack
from trellis_jax.step_plan import SamplingArrays, SequenceWork, StepPlan

PAGE_SIZE = 4
K = 4
PROMPTS = {"a": [5, 6, 7], "b": [9, 10, 11, 12, 13, 14]}
PAGES = {"a": [1, 2, 3], "b": [4, 5, 6]}  # room for 12 positions each


@pytest.fixture(scope="module")
def runner(tiny_random_model):
    runner = Runner(
        tiny_random_model,
        page_size=PAGE_SIZE,
        num_pages=16,
        token_buckets=(4, 16),
        seq_buckets=(2, 4),
        max_context_len=16,
        decode_steps=K,
    )
    runner.warmup(progress=False)
    return runner


def prefill(runner, sampling: SamplingArrays) -> dict:
    rows = [SequenceWork(rid, PROMPTS[rid], 0, PAGES[rid], True, sampling) for rid in ("a", "b")]
    return {rid: t.token_id for rid, t in runner.run(StepPlan(rows)).tokens.items()}


def single_steps(runner, sampling: SamplingArrays) -> dict:
    """K decode steps one call each after the prefill -> {id: [token ids]} (the prefill's token first)."""
    last = prefill(runner, sampling)
    out = {rid: [t] for rid, t in last.items()}
    for i in range(K):
        rows = [
            SequenceWork(rid, [out[rid][-1]], len(PROMPTS[rid]) + i, PAGES[rid], True, sampling, rng_step=1 + i)
            for rid in ("a", "b")
        ]
        for rid, token in runner.run(StepPlan(rows)).tokens.items():
            out[rid].append(token.token_id)
    return out


def multi_step(runner, sampling: SamplingArrays, num_steps=K, pages=PAGES) -> dict:
    last = prefill(runner, sampling)
    rows = [
        SequenceWork(rid, [last[rid]], len(PROMPTS[rid]), pages[rid], True, sampling, 1, num_steps=num_steps)
        for rid in ("a", "b")
    ]
    outputs = runner.run(StepPlan(rows, decode_steps=K))
    return {rid: [last[rid], outputs.tokens[rid].token_id] + [t.token_id for t in outputs.more[rid]] for rid in last}


@pytest.mark.parametrize(
    "sampling", [SamplingArrays(), SamplingArrays(temperature=0.9, seed=3, num_logprobs=2)], ids=["greedy", "seeded"]
)
def test_k_iterations_sample_what_k_single_steps_sample(runner, sampling):
    assert multi_step(runner, sampling) == single_steps(runner, sampling)


def test_positions_past_a_rows_pages_write_only_to_the_sink(runner):
    pages = {"a": [1], "b": [4, 5]}  # a: kv 4 fills page 1, so its later positions have no page
    prefill(runner, SamplingArrays())
    before = np.asarray(runner._kv.k).copy()
    multi_step(runner, SamplingArrays(), num_steps=1, pages=pages)
    after = np.asarray(runner._kv.k)
    changed = {p for p in range(1, 16) if not np.array_equal(before[:, :, p], after[:, :, p])}
    assert changed <= {1, 4, 5}


def test_warmup_compiles_each_decode_bucket_and_nothing_compiles_after(runner):
    assert {bucket for bucket, _ in runner._multi_executables} == set(runner.decode_buckets())
    compiles, backend = runner.num_compilations, backend_compile_count()
    multi_step(runner, SamplingArrays())
    single_steps(runner, SamplingArrays())
    assert (runner.num_compilations, backend_compile_count()) == (compiles, backend)


@pytest.mark.parametrize("steps", [0, True, 1.5])
def test_decode_steps_must_be_a_positive_int(tiny_random_model, steps):
    with pytest.raises(ValueError, match="decode_steps"):
        Runner(tiny_random_model, page_size=PAGE_SIZE, num_pages=8, decode_steps=steps)


def test_a_plan_marked_multi_step_may_hold_only_plain_decodes():
    buckets = BucketSet((8,), (2,), (4,))  # K = 4 here
    decode = SequenceWork("d", [5], 2, [1], True, num_steps=2)
    prefill = SequenceWork("p", [5, 6], 0, [2], True)
    penalised = SequenceWork("q", [5], 3, [3], True, SamplingArrays(frequency_penalty=0.5))
    for plan in (
        StepPlan([decode, prefill], decode_steps=K),
        StepPlan([penalised], decode_steps=K),
        StepPlan([decode], [(1, 2)], decode_steps=K),
        StepPlan([decode], decode_steps=0),
        StepPlan([SequenceWork("d", [5], 2, [1], True, num_steps=K)], decode_steps=K),  # 6 positions, 1 page
    ):
        with pytest.raises(ValueError):
            pack(plan, buckets, page_size=4, num_pages=8, vocab_size=16, max_logprobs=0)
    packed = pack(StepPlan([decode], decode_steps=K), buckets, page_size=4, num_pages=8, vocab_size=16, max_logprobs=0)
    assert packed.model_inputs.page_table[0, 0] == 1
