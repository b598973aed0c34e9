"""`rms_norm`: the native CPU kernel against the jnp reference, and the choice of implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import rms_norm as rn


def _native_or_skip():
    if reason := rn.native_available():
        pytest.skip(reason)


def _inputs(rows, hidden, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(rows, hidden)) * 3, dtype)
    weight = jnp.asarray(rng.normal(size=(hidden,)), dtype)
    return x, weight


@pytest.mark.parametrize("rows,hidden", [(1, 576), (8, 576), (37, 64), (5, 33)])
def test_native_matches_the_reference_in_float32(rows, hidden):
    _native_or_skip()
    x, weight = _inputs(rows, hidden, jnp.float32, seed=rows + hidden)
    got = jax.jit(lambda x, w: rn.rms_norm(x, w, 1e-5, implementation="native"))(x, weight)
    np.testing.assert_allclose(got, rn.reference_rms_norm(x, weight, 1e-5), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("rows,hidden", [(1, 576), (8, 576), (19, 96)])
def test_native_matches_the_reference_in_bfloat16_to_one_rounding(rows, hidden):
    _native_or_skip()
    x, weight = _inputs(rows, hidden, jnp.bfloat16, seed=rows)
    got = np.asarray(rn.rms_norm(x, weight, 1e-6, implementation="native"), np.float32)
    want = np.asarray(rn.reference_rms_norm(x, weight, 1e-6), np.float32)
    assert got.dtype == want.dtype
    # The sums may round differently, which can move a result by one bf16 step (2^-8 relative).
    np.testing.assert_allclose(got, want, rtol=2**-7, atol=1e-6)
    assert np.mean(got == want) > 0.97


def test_a_zero_row_stays_zero():
    _native_or_skip()
    x = jnp.zeros((2, 16), jnp.float32)
    np.testing.assert_array_equal(rn.rms_norm(x, jnp.ones(16), 1e-5, implementation="native"), x)


def test_the_choice_falls_back_where_the_kernel_does_not_fit(monkeypatch):
    x, weight = _inputs(3, 8, jnp.float32)
    seen = []
    monkeypatch.setattr(rn, "native_rms_norm", lambda *a: seen.append("native") or rn.reference_rms_norm(*a))
    rn.rms_norm(x[None], weight, 1e-5)  # 3-d: the reference
    rn.rms_norm(x, weight.astype(jnp.bfloat16), 1e-5)  # mixed dtypes: the reference
    assert seen == []
    monkeypatch.setattr(rn, "native_available", lambda: None)
    rn.rms_norm(x, weight, 1e-5)
    assert seen == ["native"]


def test_native_refuses_shapes_it_cannot_take():
    x, weight = _inputs(3, 8, jnp.float32)
    with pytest.raises(ValueError, match="native kernel takes"):
        rn.rms_norm(x[None], weight, 1e-5, implementation="native")
    with pytest.raises(ValueError, match="unknown implementation"):
        rn.rms_norm(x, weight, 1e-5, implementation="pallas")
