"""On-device sampling on hand-computable logits: greedy, filters, penalties, seeds, logprobs."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from runner_helpers import knobs

from trellis_jax.runner import backend_compile_count
from trellis_jax.runner.filters import min_p_mask, sortable_keys, top_k_mask, top_p_mask
from trellis_jax.runner.sampling import sample

ROWS, VOCAB = 4, 8
SAMPLE = jax.jit(functools.partial(sample, max_logprobs=3))
# probabilities 0.5, 0.3, 0.15, 0.05 on tokens 2, 5, 0, 7; the rest is (numerically) impossible
PROBS = np.array([0.15, 0, 0.5, 0, 0, 0.3, 0, 0.05])
LOGITS = np.log(np.where(PROBS > 0, PROBS, 1e-30)).astype(np.float32)


def rows_of(row, rows=ROWS):
    return jnp.asarray(np.tile(row, (rows, 1)), jnp.float32)


def kept(masked_row) -> set[int]:
    return set(np.flatnonzero(np.isfinite(np.asarray(masked_row))).tolist())


def test_greedy_is_argmax():
    logits = jax.random.normal(jax.random.key(1), (ROWS, VOCAB))
    out = SAMPLE(logits, knobs(ROWS, VOCAB))
    np.testing.assert_array_equal(out.token_ids, np.argmax(np.asarray(logits), axis=-1))


def test_top_k_one_is_greedy_at_any_temperature():
    logits = jax.random.normal(jax.random.key(2), (ROWS, VOCAB))
    out = SAMPLE(logits, knobs(ROWS, VOCAB, temperature=5.0, top_k=1, seed=[1, 2, 3, 4]))
    np.testing.assert_array_equal(out.token_ids, np.argmax(np.asarray(logits), axis=-1))


@pytest.mark.parametrize(
    "top_p, expected", [(0.4, {2}), (0.6, {2, 5}), (0.79, {2, 5}), (0.81, {2, 5, 0}), (1.0, set(range(VOCAB)))]
)
def test_top_p_keeps_the_smallest_prefix_reaching_the_mass(top_p, expected):
    masked = jax.jit(top_p_mask)(rows_of(LOGITS, 1), jnp.array([top_p], jnp.float32))
    assert kept(masked[0]) == expected


@pytest.mark.parametrize("k, expected", [(1, {2}), (2, {2, 5}), (3, {2, 5, 0}), (0, set(range(VOCAB)))])
def test_top_k_keeps_the_k_largest(k, expected):
    masked = jax.jit(top_k_mask)(rows_of(LOGITS, 1), jnp.array([k], jnp.int32))
    assert kept(masked[0]) == expected


def test_top_k_keeps_every_tie_at_the_threshold():
    row = np.array([3.0, 1.0, 2.0, 2.0, -1.0, 0.0, 2.0, -5.0], np.float32)
    masked = jax.jit(top_k_mask)(rows_of(row, 1), jnp.array([2], jnp.int32))
    assert kept(masked[0]) == {0, 2, 3, 6}


@pytest.mark.parametrize("min_p, expected", [(0.0, set(range(VOCAB))), (0.2, {2, 5, 0}), (0.5, {2, 5}), (1.0, {2})])
def test_min_p_keeps_tokens_above_a_fraction_of_the_top_probability(min_p, expected):
    masked = jax.jit(min_p_mask)(rows_of(LOGITS, 1), jnp.array([min_p], jnp.float32))
    assert kept(masked[0]) == expected


def test_sortable_keys_preserve_float_order():
    values = np.array([-np.inf, -3e38, -2.0, -1.0, -1e-30, 0.0, 1e-30, 1.0, 2.0, 3e38, np.inf], np.float32)
    keys = np.asarray(jax.jit(sortable_keys)(jnp.asarray(values[None, :])))[0]
    assert np.all(np.diff(keys.astype(np.int64)) > 0)


def test_sampled_tokens_follow_the_softmax():
    draws = 4000
    logits = rows_of(LOGITS, draws)
    steps = np.arange(draws)
    out = jax.jit(functools.partial(sample, max_logprobs=0))(
        logits, knobs(draws, VOCAB, temperature=1.0, seed=7, rng_step=steps)
    )
    freq = np.bincount(np.asarray(out.token_ids), minlength=VOCAB) / draws
    np.testing.assert_allclose(freq, PROBS, atol=0.03)


def test_same_seed_and_step_give_the_same_token_in_any_row():
    logits = rows_of(np.zeros(VOCAB, np.float32))  # uniform: the token is decided by the noise alone
    same = SAMPLE(logits, knobs(ROWS, VOCAB, temperature=1.0, seed=11, rng_step=3)).token_ids
    assert len(set(np.asarray(same).tolist())) == 1
    mixed = SAMPLE(logits, knobs(ROWS, VOCAB, temperature=1.0, seed=[5, 11, 6, 7], rng_step=[0, 3, 1, 2]))
    assert int(mixed.token_ids[1]) == int(same[0])


def test_different_steps_of_one_seed_vary():
    logits = rows_of(np.zeros(VOCAB, np.float32))
    tokens = {
        int(SAMPLE(logits, knobs(ROWS, VOCAB, temperature=1.0, seed=1, rng_step=step)).token_ids[0])
        for step in range(16)
    }
    assert len(tokens) > 3


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    row = np.array([2.0, -1.0, 1.5, 0.0, 0, 0, 0, 0], np.float32)
    prompt_mask = np.zeros((ROWS, VOCAB), np.bool_)
    prompt_mask[:, [0, 1]] = True
    greedy = SAMPLE(rows_of(row), knobs(ROWS, VOCAB, repetition_penalty=2.0, prompt_mask=prompt_mask, num_logprobs=3))
    assert int(greedy.token_ids[0]) == 2  # 2.0 / 2 = 1.0 < 1.5
    # -1.0 * 2 = -2 falls below the zeros; without the penalty token 0 wins
    assert int(SAMPLE(rows_of(row), knobs(ROWS, VOCAB)).token_ids[0]) == 0


def test_presence_and_frequency_penalties_act_on_generated_counts():
    row = np.array([3.0, 2.5, 0, 0, 0, 0, 0, 0], np.float32)
    counts = np.zeros((ROWS, VOCAB), np.int32)
    counts[:, 0] = [0, 1, 2, 1]
    out = SAMPLE(
        rows_of(row),
        knobs(
            ROWS,
            VOCAB,
            presence_penalty=[0.0, 0.4, 0.0, 0.6],
            frequency_penalty=[1.0, 0.0, 0.2, 0.0],
            output_counts=counts,
        ),
    )
    # row 0: count 0, nothing changes; row 1: 3-0.4 = 2.6 > 2.5; row 2: 3-0.4 = 2.6; row 3: 3-0.6 = 2.4 < 2.5
    np.testing.assert_array_equal(out.token_ids, [0, 0, 0, 1])


def test_logprobs_are_the_raw_log_softmax():
    logits = jax.random.normal(jax.random.key(3), (ROWS, VOCAB)) * 3
    out = SAMPLE(logits, knobs(ROWS, VOCAB, temperature=0.5, seed=1, num_logprobs=3))
    log_softmax = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    picked = log_softmax[np.arange(ROWS), np.asarray(out.token_ids)]
    np.testing.assert_allclose(out.logprobs, picked, rtol=1e-5, atol=1e-5)
    top = np.argsort(-log_softmax, axis=-1)[:, :3]
    np.testing.assert_array_equal(out.top_token_ids, top)
    np.testing.assert_allclose(out.top_logprobs, np.take_along_axis(log_softmax, top, -1), rtol=1e-5, atol=1e-5)


def test_new_knob_values_do_not_recompile():
    logits = jax.random.normal(jax.random.key(4), (ROWS, VOCAB))
    SAMPLE(logits, knobs(ROWS, VOCAB))
    before = backend_compile_count()
    for temperature, top_p, seed in [(0.7, 0.9, 1), (1.3, 0.5, 2), (0.0, 1.0, 3)]:
        jax.block_until_ready(
            SAMPLE(
                logits,
                knobs(
                    ROWS,
                    VOCAB,
                    temperature=temperature,
                    top_p=top_p,
                    seed=seed,
                    top_k=3,
                    min_p=0.1,
                    presence_penalty=0.5,
                ),
            )
        )
    assert backend_compile_count() == before
