"""The packed bfloat16 matmul: layout round trip, native kernel vs the reference, the dispatch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.matmul import api, native_bf16


def _native_or_skip():
    if reason := native_bf16.available():
        pytest.skip(reason)


def _built_or_skip():
    """Skip only where the library cannot be built: its portable loops (no AVX512_BF16) must be exact too."""
    reason = native_bf16.available()
    if reason and "AVX512_BF16" not in reason:
        pytest.skip(reason)


def _inputs(rows, k, n, layers=3, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(rows, k)), jnp.bfloat16)
    w = jnp.asarray(rng.normal(size=(layers, k, n)), jnp.bfloat16)
    return x, w


def _exact(x, w, layer):
    """The products of the bf16 values summed in float64."""
    return np.asarray(x, np.float64) @ np.asarray(w[layer], np.float64)


@pytest.mark.parametrize("k,n,width", [(6, 5, 5), (7, 5, 5), (6, 96, 48), (7, 32, 16), (4, 80, 16)])
def test_pack_round_trip_keeps_every_weight(k, n, width):
    _, w = _inputs(1, k, n)
    packed = native_bf16.pack_pairs(w)
    assert packed.shape == (3, n // width, (k + 1) // 2, width, 2) and packed.dtype == jnp.bfloat16
    np.testing.assert_array_equal(native_bf16.unpack_pairs(packed)[:, :k], w)
    assert not np.asarray(native_bf16.unpack_pairs(packed)[:, k:], np.float32).any()  # odd K: a zero row


def test_pack_stores_each_strip_whole():
    _, w = _inputs(1, 4, 96, layers=1)
    packed = np.asarray(native_bf16.pack_pairs(w), np.float32)[0]  # [S=2, K2=2, W=48, 2]
    w = np.asarray(w, np.float32)[0]
    for s, k2, j, p in [(0, 0, 0, 0), (1, 0, 5, 1), (1, 1, 47, 0), (0, 1, 20, 1)]:
        assert packed[s, k2, j, p] == w[2 * k2 + p, 48 * s + j]


@pytest.mark.parametrize(
    "rows,k,n",
    [
        (1, 576, 192),
        (2, 64, 1536),
        (3, 8, 33),
        (13, 70, 50),
        (32, 576, 960),
        (9, 34, 97),
        (600, 40, 100),
        (4, 7, 20),
        (1, 64, 112),
        (5, 32, 240),
        (17, 64, 4096),
    ],
)
def test_native_matches_the_exact_products(rows, k, n):
    _built_or_skip()
    x, w = _inputs(rows, k, n, seed=rows + k + n)
    y = api.linear(x, native_bf16.pack_pairs(w), 1, implementation="native")
    assert y.dtype == jnp.bfloat16
    y32 = api.linear(x.astype(jnp.float32), native_bf16.pack_pairs(w), 1, implementation="native")
    np.testing.assert_allclose(np.asarray(y32), _exact(x, w, 1), rtol=2e-5, atol=2e-4 * np.sqrt(k))


def test_reference_matches_the_exact_products():
    x, w = _inputs(5, 33, 40)
    y = api.linear(x.astype(jnp.float32), native_bf16.pack_pairs(w), 2, implementation="xla")
    np.testing.assert_allclose(np.asarray(y), _exact(x, w, 2), rtol=1e-5, atol=1e-4)


def test_rows_past_the_valid_count_are_zero():
    _native_or_skip()
    x, w = _inputs(11, 48, 64)
    y = np.asarray(api.linear(x.astype(jnp.float32), native_bf16.pack_pairs(w), 0, 5, implementation="native"))
    assert not y[5:].any()
    np.testing.assert_allclose(y[:5], _exact(x, w, 0)[:5], rtol=2e-5, atol=2e-3)


def test_native_inside_a_scan_reads_each_layer():
    _native_or_skip()
    x, w = _inputs(2, 48, 40, layers=5)
    packed = native_bf16.pack_pairs(w)
    scan = jax.jit(
        lambda x, w: jax.lax.scan(lambda c, l: (c, api.linear(x, w, l, implementation="native")), 0, jnp.arange(5))[1]
    )
    expected = np.einsum("mk,lkn->lmn", np.asarray(x, np.float64), np.asarray(w, np.float64))
    np.testing.assert_allclose(np.asarray(scan(x.astype(jnp.float32), packed)), expected, rtol=2e-5, atol=2e-3)


def test_layer_matmul_dispatches_packed_weights():
    x, w = _inputs(3, 16, 24)
    y = api.linear(x.astype(jnp.float32), native_bf16.pack_pairs(w), 1)
    np.testing.assert_allclose(np.asarray(y), _exact(x, w, 1), rtol=2e-5, atol=1e-3)


def test_mismatched_shapes_are_a_clear_error():
    x, w = _inputs(2, 16, 8)
    with pytest.raises(ValueError, match=r"packed w \[L, S, ceil\(K/2\), W, 2\]"):
        api.linear(x[:, :12], native_bf16.pack_pairs(w), 0)


def test_a_cpu_without_avx512_bf16_is_not_chosen(monkeypatch):
    class PortableBuild:
        def TrellisLayerMatmulBf16IsVectorized(self):
            return 0

    monkeypatch.setattr(native_bf16, "load_target", lambda *_: PortableBuild())
    assert "AVX512_BF16" in native_bf16.available()


@pytest.mark.parametrize("implementation", ["native", "xla"])
def test_out_dtype_float32_returns_the_unrounded_sums_of_bf16_inputs(implementation):
    if implementation == "native":
        _built_or_skip()
    x, w = _inputs(6, 64, 48, seed=7)
    y = api.linear(x, native_bf16.pack_pairs(w), 0, implementation=implementation, out_dtype=jnp.float32)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), _exact(x, w, 0), rtol=2e-5, atol=2e-3)
    assert not np.array_equal(np.asarray(y), np.asarray(y.astype(jnp.bfloat16), np.float32))  # not rounded
