"""Prefill in one pass == prefill split across calls with a prefix offset (what the radix cache relies on)."""

import numpy as np
import pytest
from model_testlib import PagedSequences, logits_at_positions

TOLERANCE = 1e-5
PROMPT = np.random.default_rng(7).integers(3, 320, 37).tolist()  # spans 10 pages of 4 and the Mistral window


@pytest.mark.parametrize("arch", ("llama", "qwen2", "mistral"))
def test_split_prefill_matches_one_pass(arch, tiny_model):
    loaded = tiny_model(arch)
    cuts = [(0, 10), (10, 23), (23, 37)]  # chunk ends fall inside pages (page size 4)
    one_pass = logits_at_positions(loaded, PROMPT, [end - 1 for _, end in cuts])
    seqs = PagedSequences(loaded, [len(PROMPT)])
    for row, (start, end) in enumerate(cuts):
        split = seqs.step({0: PROMPT[start:end]})[0]
        assert np.abs(split - one_pass[row]).max() <= TOLERANCE, f"chunk {start}:{end}"


def test_token_by_token_decode_matches_one_pass(tiny_model):
    loaded = tiny_model("mistral")  # sliding window 6: decode steps must drop old keys
    seqs = PagedSequences(loaded, [len(PROMPT)])
    seqs.step({0: PROMPT[:30]})
    decoded = [seqs.step({0: [token]})[0] for token in PROMPT[30:]]
    one_pass = logits_at_positions(loaded, PROMPT, list(range(30, 37)))
    assert np.abs(np.stack(decoded) - one_pass).max() <= TOLERANCE


def test_sequences_in_one_batch_do_not_interact(tiny_model):
    loaded = tiny_model("llama")
    other = PROMPT[::-1]
    seqs = PagedSequences(loaded, [len(PROMPT), len(other)])
    seqs.step({0: PROMPT[:10], 1: other[:5]})
    mixed = seqs.step({0: PROMPT[10:], 1: other[5:6]})  # a long extend beside a one-token step
    expected_a = logits_at_positions(loaded, PROMPT, [36])[0]
    expected_b = logits_at_positions(loaded, other, [5])[0]
    assert np.abs(mixed[0] - expected_a).max() <= TOLERANCE
    assert np.abs(mixed[1] - expected_b).max() <= TOLERANCE
