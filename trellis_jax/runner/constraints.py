"""Token constraints in the sampler: a grammar's allowed-token bitmask and OpenAI's logit_bias.

Device (inside the jitted step, before penalties and greedy/sampling):
  `constrain(logits, bitmask, logit_bias)` adds each row's biases, then sets the tokens its bitmask
  disallows to -inf. `constraints_active(bitmask, logit_bias)` is the bool the sampler's `lax.cond`
  takes: a step where no row is constrained skips both passes.
Wire shapes (per bucket row count S, model vocabulary V):
  bitmask    [S, ceil(V / 32)] int32: bit i of word j allows token 32*j + i (llguidance / xgrammar's
             layout); all ones (-1) = unconstrained. Words past a tokenizer's smaller vocabulary are 0,
             so ids the tokenizer has no text for are never sampled by a constrained row.
  logit_bias [S, 2 * MAX_LOGIT_BIAS] int32: MAX_LOGIT_BIAS token ids, then as many float32 biases
             bit-cast to int32; unused entries are (id 0, bias 0.0), which add nothing.
Host: `constraint_arrays(seqs, rows, vocab_size)` builds both from a plan's SequenceWork rows
(`work.bitmask`, `work.sampling.logit_bias`), each None when no row needs it: the runner then passes
device-resident neutral arrays, so an unconstrained step uploads nothing extra.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from trellis_jax.field_ranges import FIELD_RANGES, MAX_LOGIT_BIAS, WIRE_FLOAT, WIRE_INT


def bitmask_words(vocab_size: int) -> int:
    return -(-vocab_size // 32)


def neutral_bitmask(rows: int, vocab_size: int) -> np.ndarray:
    return np.full((rows, bitmask_words(vocab_size)), -1, WIRE_INT)


def neutral_logit_bias(rows: int) -> np.ndarray:
    return np.zeros((rows, 2 * MAX_LOGIT_BIAS), WIRE_INT)


# ---- device --------------------------------------------------------------------------------------
def constraints_active(bitmask: jax.Array, logit_bias: jax.Array) -> jax.Array:
    """bool[]: some row has a mask word other than all-ones, or a non-zero bias."""
    return jnp.any(bitmask != -1) | jnp.any(logit_bias[:, MAX_LOGIT_BIAS:] != 0)


def allowed_tokens(bitmask: jax.Array, vocab_size: int) -> jax.Array:
    """[S, W] int32 words -> [S, V] bool."""
    bits = (
        bitmask[:, :, None] >> jnp.arange(32, dtype=jnp.int32)
    ) & 1  # [S, W, 32]; >> is arithmetic, & 1 keeps one bit
    return bits.reshape(bitmask.shape[0], -1)[:, :vocab_size].astype(jnp.bool_)


def constrain(logits: jax.Array, bitmask: jax.Array, logit_bias: jax.Array) -> jax.Array:
    """logits [S, V] f32 -> biased, masked logits [S, V]."""
    rows = jnp.arange(logits.shape[0])[:, None]
    ids = logit_bias[:, :MAX_LOGIT_BIAS]
    values = jax.lax.bitcast_convert_type(logit_bias[:, MAX_LOGIT_BIAS:], jnp.float32)
    logits = logits.at[rows, ids].add(values)
    return jnp.where(allowed_tokens(bitmask, logits.shape[-1]), logits, -jnp.inf)


# ---- host ----------------------------------------------------------------------------------------
def constraint_arrays(seqs: Sequence, rows: int, vocab_size: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(bitmask, logit_bias) for plan rows `seqs` padded to `rows`; each None when no sampling row needs it."""
    bitmask = bias = None
    for row, seq in enumerate(seqs):
        if not seq.sample:
            continue
        if seq.bitmask is not None:
            if bitmask is None:
                bitmask = neutral_bitmask(rows, vocab_size)
            bitmask[row] = _row_words(seq, bitmask.shape[1])
        if seq.sampling.logit_bias:
            if bias is None:
                bias = neutral_logit_bias(rows)
            bias[row] = _row_bias(seq, vocab_size)
    return bitmask, bias


def _row_words(seq, width: int) -> np.ndarray:
    """The sequence's mask words at the model's width: a tokenizer with fewer ids than the model pads with
    0 (disallowed); words past the model's vocabulary name ids the model cannot produce and are dropped."""
    words = np.asarray(seq.bitmask, WIRE_INT).reshape(-1)
    out = np.zeros(width, WIRE_INT)
    out[: min(width, words.size)] = words[:width]
    return out


def _row_bias(seq, vocab_size: int) -> np.ndarray:
    pairs = seq.sampling.logit_bias
    if len(pairs) > MAX_LOGIT_BIAS:
        raise ValueError(f"request {seq.request_id!r}: logit_bias has {len(pairs)} entries, at most {MAX_LOGIT_BIAS}")
    ids = np.array([token for token, _ in pairs], np.int64)
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"request {seq.request_id!r}: logit_bias token ids must be in [0, {vocab_size})")
    bad = [bias for _, bias in pairs if not FIELD_RANGES["logit_bias"].holds(bias)]
    if bad:
        raise ValueError(
            f"request {seq.request_id!r}: logit_bias values must be {FIELD_RANGES['logit_bias'].describe()}"
        )
    out = neutral_logit_bias(1)[0]
    out[: len(pairs)] = ids
    out[MAX_LOGIT_BIAS : MAX_LOGIT_BIAS + len(pairs)] = np.array([b for _, b in pairs], WIRE_FLOAT).view(WIRE_INT)
    return out
