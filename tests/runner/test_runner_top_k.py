"""top_k_mask (runner/filters.py) on a vocabulary wider than TOP_K_WIDTH: the lax.top_k threshold (every k
small or off) and the binary search (some k above the width, or a zero at a row's k-th place) keep exactly
the tokens a sort keeps: every logit whose order-preserving key is >= the k-th largest key, ties included."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trellis_jax.runner.filters import TOP_K_WIDTH, sortable_keys, top_k_mask

VOCAB = 4 * TOP_K_WIDTH + 5
MASK = jax.jit(top_k_mask)


def rows(seed: int, count: int) -> np.ndarray:
    """Logits with many ties (values on a coarse grid), some -inf and both zeros."""
    rng = np.random.default_rng(seed)
    logits = np.round(rng.normal(0, 2, (count, VOCAB)), 1).astype(np.float32)
    logits[:, :7] = [-np.inf, 0.0, -0.0, 0.0, -0.0, 5.0, 5.0]
    return logits


def sorted_kept(logits: np.ndarray, ks: list[int]) -> np.ndarray:
    """[S, V] bool: what sorting each row's keys keeps (k <= 0: everything)."""
    keys = np.asarray(sortable_keys(jnp.asarray(logits)))
    kept = np.ones(logits.shape, bool)
    for row, k in enumerate(ks):
        if k > 0:
            kept[row] = keys[row] >= np.sort(keys[row])[::-1][min(k, VOCAB) - 1]
    return kept


@pytest.mark.parametrize(
    "ks",
    [
        [1, 5, 40, TOP_K_WIDTH],  # all within the width: lax.top_k
        [3, 0, 0, TOP_K_WIDTH],  # rows with top-k off beside them
        [2, TOP_K_WIDTH + 1, 200, VOCAB + 9],  # wider than the width: the search
    ],
)
def test_top_k_keeps_what_a_sort_keeps(ks):
    logits = rows(len(ks) + sum(ks), len(ks))
    masked = np.asarray(MASK(jnp.asarray(logits), jnp.asarray(ks, jnp.int32)))
    np.testing.assert_array_equal(
        np.isfinite(masked) | np.isneginf(logits), sorted_kept(logits, ks) | np.isneginf(logits)
    )
    np.testing.assert_array_equal(masked[np.isfinite(masked)], logits[np.isfinite(masked)])


def test_a_zero_at_the_k_th_place_keeps_what_a_sort_keeps():
    logits = np.full((2, VOCAB), -3.0, np.float32)
    logits[:, :6] = [4.0, 2.0, 0.0, -0.0, 0.0, -0.0]
    ks = [3, 4]  # zeros at the 3rd and 4th place: +0 and -0 tie as floats, +0 ranks first as a key
    masked = np.asarray(MASK(jnp.asarray(logits), jnp.asarray(ks, jnp.int32)))
    np.testing.assert_array_equal(np.isfinite(masked), sorted_kept(logits, ks))
