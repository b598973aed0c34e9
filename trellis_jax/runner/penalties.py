"""Repetition / presence / frequency penalties: host-side token counts, device-side application.

Conventions (OpenAI / vLLM):
  * presence and frequency act on generated tokens: logit -= presence * [count > 0] + frequency * count;
  * repetition (multiplicative, 1 = off) acts on every token seen in the prompt or generated:
    a positive logit is divided by it, a negative one multiplied.
The counts are dense [S, V] arrays built on the host only for steps where some row has a penalty
(`penalty_arrays` returns None otherwise, and the runner passes device-resident zeros, so the common
step ships nothing extra). Application is a handful of fused element-wise ops over the logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def penalties_active(knobs) -> jax.Array:
    """bool[]: whether some row of the batch has a penalty (else the sampler skips `penalise` entirely,
    and the [S, V] counts are not even read)."""
    return jnp.any((knobs.presence_penalty != 0) | (knobs.frequency_penalty != 0) | (knobs.repetition_penalty != 1))


def penalise(logits: jax.Array, knobs) -> jax.Array:
    """logits [S, V] f32 -> penalised logits [S, V]. `knobs` is a SamplingInputs."""
    counts = knobs.output_counts.astype(jnp.float32)  # [S, V]
    generated = counts > 0
    seen = knobs.prompt_mask | generated
    repetition = knobs.repetition_penalty[:, None]  # [S, 1]
    repeated = jnp.where(logits > 0, logits / repetition, logits * repetition)
    logits = jnp.where(seen, repeated, logits)
    return (
        logits
        - knobs.frequency_penalty[:, None] * counts
        - knobs.presence_penalty[:, None] * generated.astype(jnp.float32)
    )


def has_penalty(presence: float, frequency: float, repetition: float) -> bool:
    return presence != 0.0 or frequency != 0.0 or repetition != 1.0


def penalty_arrays(
    generated: Sequence[Sequence[int]],
    prompts: Sequence[Sequence[int]],
    active: Sequence[bool],
    num_rows: int,
    vocab_size: int,
):
    """Host counts for rows 0..len(active)-1 where `active[b]`; None when no row is active.

    Returns (output_counts [num_rows, V] int32, prompt_mask [num_rows, V] bool).
    """
    if not any(active):
        return None
    counts = np.zeros((num_rows, vocab_size), np.int32)
    prompt_mask = np.zeros((num_rows, vocab_size), np.bool_)
    for row, (gen_ids, prompt_ids, on) in enumerate(zip(generated, prompts, active)):
        if not on:
            continue
        _check_ids(gen_ids, vocab_size, "penalty_context")
        _check_ids(prompt_ids, vocab_size, "prompt_token_ids")
        np.add.at(counts[row], np.asarray(gen_ids, np.int64), 1)
        prompt_mask[row, np.asarray(prompt_ids, np.int64)] = True
    return counts, prompt_mask


def _check_ids(ids: Sequence[int], vocab_size: int, what: str) -> None:
    if len(ids) and (min(ids) < 0 or max(ids) >= vocab_size):
        raise ValueError(f"{what} holds token ids outside [0, {vocab_size}): min {min(ids)}, max {max(ids)}")
