"""Grammar bitmask and logit_bias in the jitted sampler, and their host packing (runner/constraints.py)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from runner_helpers import knobs

from trellis_jax.field_ranges import MAX_LOGIT_BIAS
from trellis_jax.runner.constraints import constraint_arrays, neutral_bitmask, neutral_logit_bias
from trellis_jax.runner.sampling import sample
from trellis_jax.step_plan import SamplingArrays, SequenceWork

ROWS, VOCAB = 2, 40  # two mask words, the second one partly past the vocabulary
SAMPLE = jax.jit(functools.partial(sample, max_logprobs=2))


def mask_allowing(*allowed_per_row: set[int]) -> np.ndarray:
    bits = np.zeros((len(allowed_per_row), 64), np.uint8)
    for row, allowed in enumerate(allowed_per_row):
        bits[row, list(allowed)] = 1
    return np.packbits(bits, axis=1, bitorder="little").view(np.int32)


def bias_table(*pairs_per_row) -> np.ndarray:
    table = neutral_logit_bias(len(pairs_per_row))
    for row, pairs in enumerate(pairs_per_row):
        for i, (token, value) in enumerate(pairs):
            table[row, i] = token
            table[row, MAX_LOGIT_BIAS + i] = np.float32(value).view(np.int32)
    return table


def run(logits, bitmask=None, bias=None, **overrides):
    bitmask = neutral_bitmask(ROWS, VOCAB) if bitmask is None else bitmask
    bias = neutral_logit_bias(ROWS) if bias is None else bias
    inputs = knobs(ROWS, VOCAB, **overrides)._replace(bitmask=jnp.asarray(bitmask), logit_bias=jnp.asarray(bias))
    return SAMPLE(jnp.asarray(logits, jnp.float32), inputs)


LOGITS = np.tile(np.arange(VOCAB, dtype=np.float32), (ROWS, 1))  # greedy picks the last id


def test_greedy_picks_the_best_allowed_token():
    out = run(LOGITS, bitmask=mask_allowing({3, 7}, {35, 1}))
    assert out.token_ids.tolist() == [7, 35]


def test_sampling_never_draws_a_disallowed_token():
    flat = np.zeros((ROWS, VOCAB), np.float32)
    for seed in range(20):
        out = run(flat, bitmask=mask_allowing({5, 33}, {0}), temperature=1.0, seed=seed)
        assert out.token_ids[0] in (5, 33) and out.token_ids[1] == 0


def test_all_ones_mask_and_no_bias_leave_greedy_alone():
    out = run(LOGITS)
    assert out.token_ids.tolist() == [VOCAB - 1, VOCAB - 1]


def test_logit_bias_moves_the_argmax():
    out = run(LOGITS, bias=bias_table([(2, 100.0)], [(VOCAB - 1, -100.0)]))
    assert out.token_ids.tolist() == [2, VOCAB - 2]


def test_logprobs_stay_raw_under_constraints():
    out = run(LOGITS, bitmask=mask_allowing({3}, {3}), num_logprobs=2)
    raw = np.asarray(jax.nn.log_softmax(jnp.asarray(LOGITS), axis=-1))
    np.testing.assert_allclose(out.logprobs, raw[:, 3], rtol=1e-5)
    assert out.top_token_ids[0].tolist() == [VOCAB - 1, VOCAB - 2]


def test_without_constraint_arrays_the_sampler_is_unchanged():
    out = SAMPLE(jnp.asarray(LOGITS), knobs(ROWS, VOCAB))
    assert out.token_ids.tolist() == [VOCAB - 1, VOCAB - 1]


def work(request_id, *, bitmask=None, logit_bias=(), sample_row=True):
    return SequenceWork(request_id, [1], 0, [1], sample_row, SamplingArrays(logit_bias=logit_bias), bitmask=bitmask)


def test_host_arrays_are_none_when_no_row_is_constrained():
    assert constraint_arrays([work("a"), work("b")], 4, VOCAB) == (None, None)


def test_host_bitmask_pads_rows_with_all_ones_and_short_masks_with_zeros():
    bitmask, bias = constraint_arrays([work("a"), work("b", bitmask=[7])], 3, VOCAB)
    assert bias is None
    assert bitmask.tolist() == [[-1, -1], [7, 0], [-1, -1]]


def test_host_bias_table_holds_ids_then_float_bits():
    _, bias = constraint_arrays([work("a", logit_bias=((5, 2.5),))], 1, VOCAB)
    assert bias[0, 0] == 5 and bias[0, MAX_LOGIT_BIAS:].view(np.float32)[0] == 2.5


def test_rows_that_do_not_sample_carry_no_constraint():
    assert constraint_arrays([work("a", bitmask=[0], sample_row=False)], 1, VOCAB) == (None, None)


@pytest.mark.parametrize("pairs", [((VOCAB, 1.0),), ((-1, 1.0),), ((1, 101.0),), ((1, float("nan")),)])
def test_bad_bias_is_a_value_error(pairs):
    with pytest.raises(ValueError, match="logit_bias"):
        constraint_arrays([work("a", logit_bias=pairs)], 1, VOCAB)
