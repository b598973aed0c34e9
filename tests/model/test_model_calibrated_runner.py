"""A Runner whose matmul backends were chosen by calibration (pallas_kernels/matmul/calibrate.py), with
injected timings that reverse the op's rules for packed weights (XLA for decode-sized steps, the native
kernel for prefill-sized ones): prepare installs that choice, and greedy steps sample what the runner on the
rules samples."""

from __future__ import annotations

import pytest
from checkpoint_testlib import write_tiny_gguf

from pallas_kernels.matmul import calibrate, choices, native_quantized
from trellis_jax.checkpoints import LoadedModel
from trellis_jax.checkpoints.gguf_loader import load_gguf_weights
from trellis_jax.runner import Runner
from trellis_jax.step_plan import SequenceWork, StepPlan

gguf = pytest.importorskip("gguf")
pytestmark = pytest.mark.skipif(native_quantized.available() is not None, reason="needs the native quantized kernel")
PAGE_SIZE = 4
REVERSED = {
    "small": "xla",
    "decode": "xla",
    "batch": "xla",
    "wide": "xla",
    "prefill": "native",
}  # rules: native to 64 rows


def reversed_clock(label, call):
    _, row_class, backend = label
    return 1.0 if backend == REVERSED[row_class] else 2.0


def make_runner(path):
    config, params = load_gguf_weights(path, weight_format="packed")
    runner = Runner(
        LoadedModel(config, params, None, str(path)),
        page_size=PAGE_SIZE,
        num_pages=64,
        token_buckets=(4, 128),
        seq_buckets=(1, 4),
        max_logprobs=3,
    )
    runner.warmup(progress=False)
    return runner


@pytest.fixture(scope="module")
def runners(tmp_path_factory, fixtures_dir):
    path = write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "m.gguf", fixtures_dir / "tiny_qwen2", "Q8_0")
    choices.clear()
    made = {"rules": make_runner(path)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRELLIS_CALIBRATION", "on")
        patch.setenv("TRELLIS_CALIBRATION_DIR", str(tmp_path_factory.mktemp("calibration")))
        patch.setattr(calibrate, "timed", reversed_clock)
        made["calibrated"] = make_runner(path)
    yield made
    choices.clear()


def test_prepare_installed_the_measured_choice(runners):
    w = runners["calibrated"].params["layers"]["w_gate_up"]
    assert {row_class: choices.lookup(w, rows) for row_class, rows in (("decode", 2), ("prefill", 128))} == {
        "decode": "xla",
        "prefill": "native",
    }


def test_greedy_steps_match_the_runner_on_the_rules(runners):
    prompts = {"a": [(7 * i) % 97 + 3 for i in range(70)], "b": [11, 12, 13]}  # a: a prefill-sized step
    tables = {"a": list(range(1, 21)), "b": [30, 31, 32]}
    sampled = {}
    for name, runner in runners.items():
        steps = []
        outputs = runner.run(StepPlan([SequenceWork(rid, p, 0, tables[rid], True) for rid, p in prompts.items()]))
        done = {rid: len(p) for rid, p in prompts.items()}
        for _ in range(4):
            steps.append({rid: (t.token_id, t.logprob) for rid, t in outputs.tokens.items()})
            plan = [SequenceWork(rid, [t.token_id], done[rid], tables[rid], True) for rid, t in outputs.tokens.items()]
            done = {rid: n + 1 for rid, n in done.items()}
            outputs = runner.run(StepPlan(plan))
        sampled[name] = steps
    for calibrated, rules in zip(sampled["calibrated"], sampled["rules"]):
        assert {rid: t for rid, (t, _) in calibrated.items()} == {rid: t for rid, (t, _) in rules.items()}
        for rid, (_, logprob) in calibrated.items():
            assert logprob == pytest.approx(rules[rid][1], abs=1e-3)
