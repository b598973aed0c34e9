"""Tiny random Llama (llama3 RoPE scaling), Qwen2 (q/k/v bias, tied) and Mistral (sliding window)
checkpoints match transformers' logits and greedy continuations (fixtures: tools/make_fixtures.py)."""

import chex
import numpy as np
import pytest
from model_testlib import logits_at_positions, read_reference

from trellis_jax.generate import generate_tokens

ARCHS = ("llama", "qwen2", "mistral")


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_logits_match_transformers_float32(arch, tiny_model, fixtures_dir):
    loaded = tiny_model(arch)
    cases = read_reference(fixtures_dir / f"tiny_{arch}_reference.npz")
    ours = [logits_at_positions(loaded, case["prompt"], case["positions"]) for case in cases]
    chex.assert_trees_all_close(ours, [case["logits"] for case in cases], atol=1e-3, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_greedy_matches_transformers(arch, tiny_model, fixtures_dir):
    cases = read_reference(fixtures_dir / f"tiny_{arch}_reference.npz")
    steps = len(cases[0]["greedy"])
    ours = generate_tokens(tiny_model(arch), [c["prompt"].tolist() for c in cases], steps)
    assert ours == [c["greedy"].tolist() for c in cases]


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_bfloat16_tracks_float32_reference(arch, tiny_model, fixtures_dir):
    loaded = tiny_model(arch, "bfloat16")
    assert loaded.params["embed"].dtype.name == "bfloat16"
    case = read_reference(fixtures_dir / f"tiny_{arch}_reference.npz")[-1]
    ours = logits_at_positions(loaded, case["prompt"], case["positions"])
    chex.assert_trees_all_close(ours, case["logits"], atol=0.05 * float(np.abs(case["logits"]).max()), rtol=0)
