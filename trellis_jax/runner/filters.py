"""Top-k, top-p and min-p masks over a batch of logit rows, exact and sort-free.

Contract: each function takes logits [S, V] (temperature already applied) and per-row knobs [S], and
returns logits [S, V] with excluded tokens set to -inf. Ties at a threshold are all kept.

Why no sort: XLA's CPU sort of 32 x 49k logits takes ~0.6 s. Instead each threshold is found by a
32-step binary search over an order-preserving uint32 view of the float32 logits (so it is exact, not
approximate), each step one fused count/sum over the rows: ~tens of ms for a full decode batch, and the
program stays small (one while loop), which keeps the per-bucket compile time down.
Top-k with every row's k <= TOP_K_WIDTH (or off) takes its k-th largest value from one `lax.top_k` of that
width instead (XLA CPU's partial sort: ~5x cheaper than the search for a 49k vocabulary); the same
threshold, so the same tokens kept. A row whose k-th value is a zero (+0 and -0 are one float but two keys)
sends the batch to the search.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf
_SEARCH_STEPS = 32  # bits of the keys: enough to pin down any threshold exactly
TOP_K_WIDTH = 64  # top-k up to this k reads its threshold off one lax.top_k of this width


def sortable_keys(logits: jax.Array) -> jax.Array:
    """float32 [S, V] -> uint32 [S, V] with the same order (-inf lowest). NaN is not expected."""
    bits = jax.lax.bitcast_convert_type(logits.astype(jnp.float32), jnp.uint32)
    negative = (bits >> 31) == 1
    return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def min_p_mask(logits: jax.Array, min_p: jax.Array) -> jax.Array:
    """Keep tokens with prob >= min_p * max prob, i.e. logit >= max logit + log(min_p)."""
    max_logit = jnp.max(logits, axis=-1, keepdims=True)  # [S, 1]
    threshold = max_logit + jnp.log(jnp.maximum(min_p, 0.0))[:, None]  # min_p = 0 -> -inf keeps all
    return jnp.where(logits >= threshold, logits, NEG_INF)


def top_k_mask(logits: jax.Array, top_k: jax.Array) -> jax.Array:
    """Keep the top_k largest per row (top_k <= 0 or >= V keeps all)."""
    vocab = logits.shape[-1]
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab).astype(jnp.int32)  # [S]
    keys = sortable_keys(logits)
    width = min(TOP_K_WIDTH, vocab)
    values = jax.lax.top_k(logits.astype(jnp.float32), width)[0]  # [S, width], largest first
    kth_value = jnp.take_along_axis(values, jnp.clip(k - 1, 0, width - 1)[:, None], axis=1)[:, 0]  # [S]
    keep_all = k >= vocab
    fast_kth = jnp.where(keep_all, jnp.uint32(0), sortable_keys(kth_value))  # key 0: below every logit's
    fits = jnp.all(keep_all | ((k <= width) & (kth_value != 0)))

    def search():  # largest key t with count(keys >= t) >= k: the k-th largest value
        return _largest_true(keys, lambda t: jnp.sum(keys >= t[:, None], axis=-1) >= k)

    kth = jax.lax.cond(fits, lambda: fast_kth, search)
    return jnp.where(keys >= kth[:, None], logits, NEG_INF)


def top_p_mask(logits: jax.Array, top_p: jax.Array) -> jax.Array:
    """Keep the smallest set of largest tokens whose probability mass reaches top_p (>= 1 keeps all).

    A token is kept iff the mass of the tokens strictly above it is < top_p (the sort-and-cumsum rule).
    """
    probs = jax.nn.softmax(logits, axis=-1)  # [S, V]
    keys = sortable_keys(logits)
    # Smallest key t with mass(keys > t) < top_p.
    threshold = _smallest_true(keys, lambda t: jnp.sum(jnp.where(keys > t[:, None], probs, 0.0), axis=-1) < top_p)
    keep = (keys >= threshold[:, None]) | (top_p[:, None] >= 1.0)
    return jnp.where(keep, logits, NEG_INF)


def _largest_true(keys: jax.Array, predicate) -> jax.Array:
    """Per row, the largest t in [min key, max key] with predicate(t) true; predicate(min) must hold
    and be monotone (true up to a point, then false)."""

    def step(_, bounds):
        low, high = bounds
        mid = low + (high - low) // 2 + (high - low) % 2  # upper middle, so low always moves
        ok = predicate(mid)
        return jnp.where(ok, mid, low), jnp.where(ok, high, mid - 1)

    low, high = jax.lax.fori_loop(0, _SEARCH_STEPS, step, (jnp.min(keys, -1), jnp.max(keys, -1)))
    return low


def _smallest_true(keys: jax.Array, predicate) -> jax.Array:
    """Per row, the smallest t in [min key, max key] with predicate(t) true; predicate(max) must hold
    and be monotone (false up to a point, then true)."""

    def step(_, bounds):
        low, high = bounds
        mid = low + (high - low) // 2
        ok = predicate(mid)
        return jnp.where(ok, low, mid + 1), jnp.where(ok, mid, high)

    low, high = jax.lax.fori_loop(0, _SEARCH_STEPS, step, (jnp.min(keys, -1), jnp.max(keys, -1)))
    return high
