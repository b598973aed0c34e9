"""On-device sampling: small pure functions over a batch of logit rows (gpt-fast style).

Contract: every knob is a per-row array, so a new temperature, top-p or seed never recompiles; only
`max_logprobs` (the static top-N width) is part of the compiled shape. Shapes: S rows, V vocab.

Order of processing for one row (vLLM's order, with the constraints first):
  raw logits -> logit_bias -> grammar bitmask (-inf) -> penalties
             -> greedy? argmax : (temperature -> min-p -> top-k -> top-p -> Gumbel-max draw)
The returned logprobs (the sampled token's and the top-N) are the model's raw distribution,
log_softmax of the unprocessed logits (vLLM's "raw_logprobs"), so they do not depend on sampling knobs,
logit_bias or a grammar (a forced token may have a low raw logprob).

Randomness: row b's noise is a hash of (seed[b], rng_step[b]) (rng.py), so a request with a seed gets the
same tokens whatever else shares its batch and wherever its row sits.
Costly passes (the top-k/top-p threshold searches, the random draw, the top-N) run under `lax.cond`
and are skipped when no row of the batch needs them: a greedy batch without penalties costs one row max
and one logsumexp of the raw logits (`pallas_kernels.greedy_stats`: a native pass on CPU, else
`lax.top_k` with k=1, which XLA CPU runs ~2x faster than argmax, and `logsumexp`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pallas_kernels.greedy_stats import argmax_rows, greedy_stats
from trellis_jax.runner.constraints import constrain, constraints_active
from trellis_jax.runner.filters import min_p_mask, top_k_mask, top_p_mask
from trellis_jax.runner.penalties import penalise, penalties_active
from trellis_jax.runner.rng import gumbel_noise


class SamplingInputs(NamedTuple):
    """Per-row knobs, all dynamic. Padding rows use the neutral values (greedy, no filters)."""

    temperature: jax.Array  # [S] f32, 0 = greedy
    top_k: jax.Array  # [S] i32, <= 0 = off
    top_p: jax.Array  # [S] f32, 1 = off
    min_p: jax.Array  # [S] f32, 0 = off
    presence_penalty: jax.Array  # [S] f32
    frequency_penalty: jax.Array  # [S] f32
    repetition_penalty: jax.Array  # [S] f32, 1 = off
    seed: jax.Array  # [S] u32
    rng_step: jax.Array  # [S] i32, tokens sampled so far by this sequence
    num_logprobs: jax.Array  # [S] i32, top-N wanted (0 = none)
    output_counts: jax.Array  # [S, V] i32, times each token was generated (presence / frequency)
    prompt_mask: jax.Array  # [S, V] bool, token occurs in the prompt (repetition)
    bitmask: jax.Array | None = None  # [S, ceil(V/32)] i32 allowed tokens, -1 = all (constraints.py); None: none
    logit_bias: jax.Array | None = None  # [S, 2 * MAX_LOGIT_BIAS] i32 ids + bit-cast f32 biases; None: none


class SamplerOutputs(NamedTuple):
    token_ids: jax.Array  # [S] i32
    logprobs: jax.Array  # [S] f32, raw logprob of the sampled token
    top_token_ids: jax.Array  # [S, N] i32, raw top-N (N = max_logprobs; rows slice what they asked for)
    top_logprobs: jax.Array  # [S, N] f32


def sample(logits: jax.Array, knobs: SamplingInputs, *, max_logprobs: int) -> SamplerOutputs:
    """logits [S, V] float32 -> the next token of every row, with its raw logprob and the raw top-N."""
    logits = logits.astype(jnp.float32)
    raw_ids, log_normalizer = greedy_stats(logits)  # [S], [S]
    base, base_ids = _constrained(logits, raw_ids, knobs)
    processed, greedy_ids = jax.lax.cond(  # [S, V], [S]: penalised logits and their argmax, or the base ones
        penalties_active(knobs), lambda: _with_argmax(penalise(base, knobs)), lambda: (base, base_ids)
    )
    token_ids = jax.lax.cond(
        jnp.any(knobs.temperature > 0), lambda: _draw_or_greedy(processed, greedy_ids, knobs), lambda: greedy_ids
    )
    token_logprobs = jnp.take_along_axis(logits, token_ids[:, None], axis=-1)[:, 0] - log_normalizer  # [S]
    top_ids, top_values = _top_logprobs(logits, log_normalizer, knobs.num_logprobs, max_logprobs)
    return SamplerOutputs(token_ids, token_logprobs, top_ids, top_values)


def _constrained(logits: jax.Array, raw_ids: jax.Array, knobs: SamplingInputs) -> tuple[jax.Array, jax.Array]:
    """logit_bias and the grammar bitmask applied, with their argmax; the raw logits when no row has either."""
    if knobs.bitmask is None or knobs.logit_bias is None:
        return logits, raw_ids
    return jax.lax.cond(
        constraints_active(knobs.bitmask, knobs.logit_bias),
        lambda: _with_argmax(constrain(logits, knobs.bitmask, knobs.logit_bias)),
        lambda: (logits, raw_ids),
    )


def _with_argmax(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    return logits, argmax_rows(logits)


def _draw_or_greedy(logits: jax.Array, greedy_ids: jax.Array, knobs: SamplingInputs) -> jax.Array:
    """Rows with temperature > 0 draw from their filtered distribution; the others keep argmax."""
    filtered = filter_logits(scale_by_temperature(logits, knobs.temperature), knobs)
    drawn = draw(filtered, knobs.seed, knobs.rng_step)  # [S]
    return jnp.where(knobs.temperature > 0, drawn, greedy_ids)


def scale_by_temperature(logits: jax.Array, temperature: jax.Array) -> jax.Array:
    """[S, V] / [S]; greedy rows (temperature 0) are left unscaled (their draw is discarded)."""
    safe = jnp.where(temperature > 0, temperature, 1.0)
    return logits / safe[:, None]


def filter_logits(logits: jax.Array, knobs: SamplingInputs) -> jax.Array:
    """min-p, then top-k, then top-p (renormalised over what top-k kept). [S, V] -> [S, V]."""
    logits = min_p_mask(logits, knobs.min_p)
    logits = jax.lax.cond(jnp.any(knobs.top_k > 0), lambda: top_k_mask(logits, knobs.top_k), lambda: logits)
    return jax.lax.cond(jnp.any(knobs.top_p < 1.0), lambda: top_p_mask(logits, knobs.top_p), lambda: logits)


def draw(logits: jax.Array, seed: jax.Array, rng_step: jax.Array) -> jax.Array:
    """Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits). -> [S] i32."""
    return argmax_rows(logits + gumbel_noise(seed, rng_step, logits.shape[-1]))


def _top_logprobs(logits: jax.Array, log_normalizer: jax.Array, num_logprobs: jax.Array, max_logprobs: int):
    """Top-N (N = max_logprobs, static) of the raw distribution, computed only if some row asks."""
    rows = logits.shape[0]

    def skip():
        return jnp.zeros((rows, max_logprobs), jnp.int32), jnp.zeros((rows, max_logprobs), jnp.float32)

    if max_logprobs == 0:
        return skip()

    def compute():
        values, ids = jax.lax.top_k(logits, max_logprobs)  # [S, N]
        return ids.astype(jnp.int32), values - log_normalizer[:, None]

    return jax.lax.cond(jnp.any(num_logprobs > 0), compute, skip)
