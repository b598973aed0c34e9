"""The Runner on a tiny random model: warm-up, no recompilation, agreement with model.forward, limits."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from trellis_jax.model import build_step_inputs, init_kv_pages, jit_forward
from trellis_jax.runner import BucketOverflowError, Runner, backend_compile_count, compiled_functions
from trellis_jax.step_plan import SamplingArrays, SequenceWork, StepPlan

PAGE_SIZE = 4


@pytest.fixture(scope="module")
def runner(tiny_random_model):
    runner = Runner(
        tiny_random_model, page_size=PAGE_SIZE, num_pages=96, token_buckets=(4, 16), seq_buckets=(1, 4), max_logprobs=5
    )
    runner.warmup(progress=False)
    return runner


def pages(first: int, count: int) -> list[int]:
    return list(range(first, first + count))


def test_warmup_compiles_every_bucket_once(runner):
    assert set(runner.compiled_buckets) == set(runner.buckets.all())
    assert runner.num_compilations == len(runner.buckets.all())
    runner.warmup(progress=False)
    assert runner.num_compilations == len(runner.buckets.all())


def test_limits_are_exposed_for_the_scheduler(runner):
    assert (runner.max_num_tokens, runner.max_num_seqs) == (16, 4)
    assert runner.max_pages_per_seq * PAGE_SIZE >= runner.max_context_len == 64
    assert runner.num_pages == 96


def mixed_workload():
    """Prefill chunks and decodes of varying lengths, batch sizes and sampling knobs."""
    greedy = SamplingArrays()
    hot = SamplingArrays(temperature=0.9, top_k=5, top_p=0.8, min_p=0.05, seed=3, num_logprobs=5)
    penalised = SamplingArrays(
        temperature=0.6, presence_penalty=0.3, frequency_penalty=0.2, repetition_penalty=1.3, seed=9, num_logprobs=1
    )
    yield [SequenceWork("a", list(range(1, 14)), 0, pages(1, 4), False)]  # first chunk
    yield [
        SequenceWork("a", [14, 15], 13, pages(1, 4), True, hot),  # last chunk + a fresh prompt
        SequenceWork("b", [5, 6, 7], 0, pages(5, 1), True, greedy),
    ]
    for step in range(3):
        batch = [
            SequenceWork("a", [20 + step], 15 + step, pages(1, 5), True, hot, rng_step=step + 1),
            SequenceWork(
                "b",
                [30 + step],
                3 + step,
                pages(5, 2),
                True,
                penalised,
                rng_step=step + 1,
                penalty_context=[30, 31][:step],
                prompt_token_ids=[5, 6, 7],
            ),
        ]
        yield batch[: 1 + step % 2]
    for pos in range(6):  # decodes the device continues from its resident rows (a new page at position 4)
        yield [
            SequenceWork(
                f"c{i}",
                [i + 1],
                pos,
                [20 + i, 40 + i][: pos // 4 + 1],
                True,
                SamplingArrays(temperature=0.1 * i, seed=i),
                rng_step=pos,
            )
            for i in range(4)
        ]
    biased = SamplingArrays(temperature=0.5, seed=2, logit_bias=((3, 5.0), (4, -100.0)))
    grammar = SamplingArrays(temperature=1.0, seed=4, structured=True)
    yield [  # a grammar row and a logit_bias row beside a plain one
        SequenceWork("g", [1, 2], 0, [30], True, grammar, bitmask=[0b1010, 0, 0]),
        SequenceWork("l", [3], 0, [31], True, biased),
        SequenceWork("p", [4], 0, [32], True, greedy),
    ]


def test_grammar_row_samples_only_allowed_tokens(runner):
    work = SequenceWork("g", [1, 2], 0, [33], True, SamplingArrays(temperature=1.0, seed=5), bitmask=[0b1010])
    assert runner.run(StepPlan([work])).tokens["g"].token_id in (1, 3)


def test_mixed_workload_after_warmup_never_compiles(runner):
    compiles, backend = runner.num_compilations, backend_compile_count()
    resident = runner.resident_stats
    for sequences in mixed_workload():
        outputs = runner.run(StepPlan(sequences))
        assert set(outputs.tokens) == {s.request_id for s in sequences if s.sample}
    assert runner.num_compilations == compiles
    assert backend_compile_count() == backend, compiled_functions(backend)
    assert runner.resident_stats["continued"] - resident["continued"] >= 20  # the delta path ran
    assert runner.resident_stats["grown"] > resident["grown"]


def reference_greedy(config, params, tokens: list[int]) -> tuple[int, float]:
    """Greedy next token and its logprob from model.forward over the whole sequence, fresh pages."""
    kv = init_kv_pages(config, 8, PAGE_SIZE)
    batch = build_step_inputs([tokens], [0], [pages(1, 5)], PAGE_SIZE, num_token_rows=16, pages_per_seq=16)
    logits, _ = jit_forward(params, kv, jax.tree.map(jax.numpy.asarray, batch), config=config)
    logprobs = np.asarray(jax.nn.log_softmax(logits[0]))
    return int(np.argmax(logprobs)), float(logprobs.max())


def test_chunked_prefill_and_decode_match_model_forward(runner, tiny_random_model):
    config, params = tiny_random_model
    prompt = [7, 3, 99, 42, 5, 8, 13]
    table = pages(40, 5)
    runner.run(StepPlan([SequenceWork("r", prompt[:4], 0, table, False)]))
    tokens = list(prompt)
    outputs = runner.run(StepPlan([SequenceWork("r", prompt[4:], 4, table, True)]))
    for _ in range(3):
        sampled = outputs.tokens["r"]
        expected_token, expected_logprob = reference_greedy(config, params, tokens)
        assert sampled.token_id == expected_token
        assert sampled.logprob == pytest.approx(expected_logprob, abs=1e-4)
        tokens.append(sampled.token_id)
        outputs = runner.run(StepPlan([SequenceWork("r", [sampled.token_id], len(tokens) - 1, table, True)]))


def test_seeded_sampling_ignores_batch_composition(runner):
    knobs = SamplingArrays(temperature=1.5, seed=1234)
    alone = SequenceWork("s", [9, 8, 7], 0, pages(60, 1), True, knobs, rng_step=5)
    solo = runner.run(StepPlan([alone])).tokens["s"].token_id
    others = [
        SequenceWork(f"o{i}", [i + 1, i + 2], 0, [70 + i], True, SamplingArrays(temperature=1.0, seed=i))
        for i in range(3)
    ]
    crowded = runner.run(StepPlan(others[:2] + [alone] + others[2:])).tokens["s"].token_id
    assert crowded == solo


def test_plan_beyond_the_largest_bucket_is_refused(runner):
    with pytest.raises(BucketOverflowError, match="max_num_tokens = 16"):
        runner.run(StepPlan([SequenceWork("big", list(range(17)), 0, pages(1, 5), False)]))
    many = [SequenceWork(f"m{i}", [1], 0, [1 + i], True) for i in range(5)]
    with pytest.raises(BucketOverflowError, match="max_num_seqs = 4"):
        runner.run(StepPlan(many))


def test_every_run_bumps_the_kv_generation_once_even_a_refused_one(runner):
    before = runner.kv_generation
    runner.run(StepPlan([SequenceWork("g", [1, 2, 3], 0, pages(30, 1), True)]))
    assert runner.kv_generation == before + 1
    with pytest.raises(BucketOverflowError):
        runner.run(StepPlan([SequenceWork("big", list(range(17)), 0, pages(1, 5), False)]))
    assert runner.kv_generation == before + 2


def test_one_token_bucket_is_refused(tiny_random_model):
    with pytest.raises(ValueError, match="token buckets must be >= 2"):
        Runner(tiny_random_model, page_size=PAGE_SIZE, num_pages=8, token_buckets=(1, 4), seq_buckets=(1,))


def test_kv_memory_budget_sizes_the_pool(tiny_random_model):
    config, _ = tiny_random_model
    page_bytes = PAGE_SIZE * config.kv_bytes_per_token()
    small = Runner(
        tiny_random_model, page_size=PAGE_SIZE, kv_memory_bytes=10 * page_bytes, token_buckets=(4,), seq_buckets=(1,)
    )
    assert small.num_pages == 10
    assert small.kv_pool.describe().startswith("10 pages x 4 tokens = 40 tokens of KV")
