"""A Runner on packed GGUF weights (weight_format="packed"): prepare keeps them packed, warm-up compiles every
bucket once, and greedy steps (prefill, decode, batched) sample what the float runner on the same file samples."""

from __future__ import annotations

import pytest
from checkpoint_testlib import write_tiny_gguf

from pallas_kernels.matmul import quantized
from trellis_jax.checkpoints import LoadedModel
from trellis_jax.checkpoints.gguf_loader import load_gguf_weights
from trellis_jax.runner import Runner
from trellis_jax.step_plan import SequenceWork, StepPlan

gguf = pytest.importorskip("gguf")
PAGE_SIZE = 4


@pytest.fixture(scope="module")
def runners(tmp_path_factory, fixtures_dir):
    path = write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "m.gguf", fixtures_dir / "tiny_qwen2", "Q8_0")
    made = {}
    for fmt in ("packed", "float"):
        config, params = load_gguf_weights(path, weight_format=fmt)
        runner = Runner(
            LoadedModel(config, params, None, str(path)),
            page_size=PAGE_SIZE,
            num_pages=64,
            token_buckets=(4, 16),
            seq_buckets=(1, 4),
            max_logprobs=3,
        )
        runner.warmup(progress=False)
        made[fmt] = runner
    return made


def test_prepare_keeps_the_weights_packed_and_fuses_them(runners):
    layers = runners["packed"].params["layers"]
    assert all(quantized.is_quantized(w) for name, w in layers.items() if name.startswith("w"))
    assert quantized.is_quantized(runners["packed"].params["embed"])  # tied: the packed embedding is the head


def test_warmup_compiled_each_bucket_once(runners):
    runner = runners["packed"]
    assert runner.num_compilations == len(runner.buckets.all())


def test_greedy_steps_match_the_float_runner(runners):
    prompts = {"a": [7, 3, 99, 42, 5, 8, 13], "b": [11, 12, 13]}
    tables = {"a": [1, 2, 3, 4], "b": [10, 11, 12]}
    steps = [[SequenceWork(rid, prompt, 0, tables[rid], True) for rid, prompt in prompts.items()]]
    sampled = {fmt: [] for fmt in runners}
    for fmt, runner in runners.items():
        done = {rid: len(p) for rid, p in prompts.items()}
        outputs = runner.run(StepPlan(steps[0]))
        for _ in range(4):
            sampled[fmt].append({rid: (t.token_id, t.logprob) for rid, t in outputs.tokens.items()})
            plan = [SequenceWork(rid, [t.token_id], done[rid], tables[rid], True) for rid, t in outputs.tokens.items()]
            done = {rid: n + 1 for rid, n in done.items()}
            outputs = runner.run(StepPlan(plan))
    for packed, floats in zip(sampled["packed"], sampled["float"]):
        assert {rid: t for rid, (t, _) in packed.items()} == {rid: t for rid, (t, _) in floats.items()}
        for rid, (_, logprob) in packed.items():
            assert logprob == pytest.approx(floats[rid][1], abs=1e-3)
