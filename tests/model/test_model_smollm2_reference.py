"""The default model (SmolLM2-135M-Instruct GGUF, float32) matches transformers loading the same GGUF:
last-token logits within 1e-2 and 16-token greedy continuations identical for every prompt."""

import numpy as np
import pytest
from model_testlib import read_reference

from trellis_jax.generate import generate_tokens, prefill

STEPS = 16


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    return read_reference(fixtures_dir / "smollm2_reference.npz")


def test_reference_covers_at_least_eight_prompts(reference):
    assert len(reference) >= 8 and all(len(case["greedy"]) == STEPS for case in reference)


def test_last_token_logits_match_transformers(default_model, reference):
    logits = prefill(default_model, [case["prompt"].tolist() for case in reference], STEPS).logits
    diffs = [np.abs(row[case["vocab_ids"]] - case["logits"]).max() for row, case in zip(logits, reference)]
    assert max(diffs) <= 1e-2, f"max abs logits diff per prompt: {np.round(diffs, 5).tolist()}"


def test_greedy_continuations_match_transformers(default_model, reference):
    ours = generate_tokens(default_model, [case["prompt"].tolist() for case in reference], STEPS)
    for i, (tokens, case) in enumerate(zip(ours, reference)):
        assert tokens == case["greedy"].tolist(), f"prompt {i}"
