"""The matmul op's native float32 backend against x @ w[layer], and the trace-time choice of implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.matmul import api, native_f32
from pallas_kernels.native.build import NativeUnavailable


def _inputs(rows, k, n, layers=3, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((rows, k)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((layers, k, n)), jnp.float32)
    return x, w


@pytest.mark.parametrize(
    "rows,k,n",
    [
        (1, 576, 192),
        (2, 64, 1536),
        (3, 7, 33),
        (4, 1536, 576),
        (1, 5, 2100),
        (13, 70, 50),
        (32, 576, 1536),
        (9, 33, 97),
        (64, 130, 1000),
        (600, 40, 100),
    ],
)
def test_native_matches_reference(rows, k, n):
    x, w = _inputs(rows, k, n)
    for layer in range(w.shape[0]):
        got = jax.jit(lambda x, w, l: api.linear(x, w, l, implementation="native"))(x, w, jnp.int32(layer))
        np.testing.assert_allclose(got, x @ w[layer], rtol=2e-5, atol=2e-4 * np.sqrt(k))


@pytest.mark.parametrize("k,n,width", [(5, 33, 33), (4, 96, 48), (3, 112, 16)])
def test_strips_round_trip_keeps_every_weight(k, n, width):
    _, w = _inputs(1, k, n)
    strips = native_f32.pack_strips(w)
    assert strips.shape == (3, n // width, k, width) and native_f32.is_strips(strips)
    np.testing.assert_array_equal(native_f32.unpack_strips(strips), w)


def test_strips_store_each_strip_whole():
    _, w = _inputs(1, 3, 96, layers=1)
    strips = np.asarray(native_f32.pack_strips(w))[0]  # [S=2, K=3, W=48]
    assert strips[1, 2, 5] == w[0, 2, 48 + 5] and strips[0, 1, 47] == w[0, 1, 47]


@pytest.mark.parametrize(
    "rows,k,n", [(1, 576, 192), (3, 7, 33), (4, 1536, 576), (2, 64, 112), (13, 70, 480), (1, 8, 4096), (600, 40, 96)]
)
def test_native_reads_strips_like_the_plain_layout(rows, k, n):
    x, w = _inputs(rows, k, n, seed=rows + n)
    strips = native_f32.pack_strips(w)
    for implementation in ("native", "xla"):
        got = jax.jit(lambda x, w, r: api.linear(x, w, 2, r, implementation=implementation))(  # noqa: B023 (called at once, inside the loop)
            x, strips, jnp.int32(rows - 1)
        )
        expected = np.where(np.arange(rows)[:, None] < rows - 1, x @ w[2], 0.0)
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-4 * np.sqrt(k), err_msg=implementation)


def test_strips_with_a_mismatched_input_are_a_clear_error():
    x, w = _inputs(2, 16, 48)
    with pytest.raises(ValueError, match=r"float32 strips \[L, S, K, W\]"):
        api.linear(x[:, :8], native_f32.pack_strips(w), 0)


@pytest.mark.parametrize("valid", [0, 1, 5, 8, 11])
def test_rows_past_the_valid_count_are_zero_and_the_rest_exact(valid):
    x, w = _inputs(8, 96, 80)
    for implementation in ("native", "xla"):
        got = jax.jit(lambda x, w, r: api.linear(x, w, 1, r, implementation=implementation))(  # noqa: B023 (called at once, inside the loop)
            x, w, jnp.int32(valid)
        )
        expected = np.where(np.arange(8)[:, None] < valid, x @ w[1], 0.0)
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-3, err_msg=implementation)


def test_native_inside_a_scan_reads_each_layer():
    x, w = _inputs(2, 48, 40, layers=5)
    scan = jax.jit(
        lambda x, w: jax.lax.scan(lambda c, l: (c, api.linear(x, w, l, implementation="native")), 0, jnp.arange(5))[1]
    )
    np.testing.assert_allclose(scan(x, w), jnp.einsum("mk,lkn->lmn", x, w), rtol=2e-5, atol=1e-4)


def test_choice_is_native_for_float32_within_the_builds_row_limit():
    if reason := native_f32.available():
        pytest.skip(reason)
    limit = native_f32.max_rows()
    x, w = _inputs(limit or 4096, 8, 8)
    assert api.choose(x, w) == "native"
    if limit is not None:
        assert api.choose(jnp.zeros((limit + 1, 8)), w) == "xla"
    assert api.choose(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)) == "xla"


def test_only_the_avx512_build_is_unlimited(monkeypatch):
    class Build:
        def __init__(self, limit):
            self.limit = limit

        def TrellisLayerMatmulPreferredMaxRows(self):
            return self.limit

    monkeypatch.setattr(native_f32, "load_target", lambda *_: Build(0))
    assert native_f32.max_rows() is None
    monkeypatch.setattr(native_f32, "load_target", lambda *_: Build(64))
    assert native_f32.max_rows() == 64


def test_shape_mismatch_is_a_clear_error():
    x, w = _inputs(2, 8, 8)
    with pytest.raises(ValueError, match=r"x must be \[M, K\] and w \[L, K, N\]"):
        api.linear(x[:, :5], w, 0)


def test_unknown_implementation_is_refused():
    x, w = _inputs(1, 8, 8)
    with pytest.raises(ValueError, match="unknown implementation 'cuda'"):
        api.linear(x, w, 0, implementation="cuda")


def test_choice_falls_back_to_xla_when_native_cannot_build(monkeypatch):
    def refuse(*_):
        raise NativeUnavailable("no compiler here")

    monkeypatch.setattr(native_f32, "load_target", refuse)
    x, w = _inputs(1, 8, 8)
    assert native_f32.available() == "no compiler here"
    assert api.choose(x, w) == "xla"
    np.testing.assert_allclose(api.linear(x, w, 1), x @ w[1], rtol=1e-6)


def test_a_build_without_avx512_is_not_chosen(monkeypatch):
    class PortableBuild:
        def TrellisLayerMatmulIsVectorized(self):
            return 0

    monkeypatch.setattr(native_f32, "load_target", lambda *_: PortableBuild())
    assert "without AVX-512" in native_f32.available()
