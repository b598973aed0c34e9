"""copy_pages: the native in-place page copy against the XLA loop, and its padding semantics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.ragged_paged_attention import copy_pages as cp


def _pages(dtype, seed=0, shape=(3, 2, 9, 4, 8)):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)


def _native_or_skip():
    if reason := cp.native_available():
        pytest.skip(reason)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_native_matches_the_reference(dtype):
    _native_or_skip()
    pages = _pages(dtype)
    src, dst = jnp.array([1, 4, 7, 0], jnp.int32), jnp.array([2, 5, 8, 0], jnp.int32)
    expected = cp.copy_pages(pages, src, dst, 3, implementation="xla")
    got = cp.copy_pages(pages, src, dst, 3, implementation="native")
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(expected, np.float32))


@pytest.mark.parametrize("implementation", ["native", "xla"])
def test_only_the_first_count_pairs_are_copied(implementation):
    if implementation == "native":
        _native_or_skip()
    pages = _pages(jnp.float32, seed=1)
    got = np.asarray(
        cp.copy_pages(
            pages, jnp.array([1, 3], jnp.int32), jnp.array([2, 4], jnp.int32), 1, implementation=implementation
        )
    )
    before = np.asarray(pages)
    np.testing.assert_array_equal(got[:, :, 2], before[:, :, 1])  # copied: every layer and head
    np.testing.assert_array_equal(np.delete(got, 2, axis=2), np.delete(before, 2, axis=2))  # nothing else


def test_donated_pages_are_updated_in_place_under_jit():
    _native_or_skip()
    pages = _pages(jnp.bfloat16, seed=2)
    expected = np.asarray(pages, np.float32).copy()
    expected[:, :, 6] = expected[:, :, 3]
    copy = jax.jit(lambda p, s, d, n: cp.copy_pages(p, s, d, n), donate_argnums=(0,))
    got = copy(pages, jnp.array([3, 0], jnp.int32), jnp.array([6, 0], jnp.int32), jnp.int32(1))
    np.testing.assert_array_equal(np.asarray(got, np.float32), expected)


def test_bad_shapes_are_a_clear_error():
    with pytest.raises(ValueError, match=r"\[L, Hkv, P, S, D\]"):
        cp.copy_pages(jnp.zeros((2, 3, 4)), jnp.zeros(2, jnp.int32), jnp.zeros(2, jnp.int32), 1)
