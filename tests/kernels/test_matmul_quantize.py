"""Quantizing float matrices (pallas_kernels/matmul/quantize.py): every element within half a stored step,
that step within float16 rounding of absmax/127 (int8) or range/15 (int4); the result is a genuine GGUF
Q8_0/Q4_1 block layout (gguf.quants reads it back bit for bit), and `linear` multiplies it like the reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.matmul import api, native_quantized, quantize, quantized
from pallas_kernels.matmul.reference import reference_linear

F16_STEP = 2.0**-10  # float16's relative spacing: rounding a scale up (a min down) costs at most this,
F16_SUBNORMAL = 2.0**-24  # or this, absolutely, where the value is subnormal (below 2^-14)


def _weights(k=256, n=48, seed=0):
    """[K, N] with per-group magnitudes from 1e-4 to 10, an outlier, and one group off-centre."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)).astype(np.float32)
    w *= np.logspace(-4, 1, k // 32).repeat(32)[:, None].astype(np.float32)
    w[5, 3] = 40.0
    w[32:64, 7] += 3.0  # all positive: int4's minimum far from zero
    return w


def _dense(w):
    return np.swapaxes(quantized.dequantize_numpy(w), -1, -2)  # [..., K, N]


def _per_group(values, reduce):
    """[K, N] -> [K/32, N] per 32-group along K."""
    k, n = values.shape
    return reduce(values.reshape(k // 32, 32, n), axis=1)


def _within(err, limit):
    assert np.all(err <= limit * (1 + 1e-6) + 1e-30), float(np.max(err / np.maximum(limit, 1e-30)))


def test_int8_is_within_half_a_step_of_absmax_over_127():
    w = _weights()
    q = quantize.quantize(w, "int8")
    assert q.fmt == "Q8_0" and q.codes.dtype == np.int8 and q.scales.dtype == np.float16
    err = np.abs(_dense(q) - w)
    _within(err, quantize.bound(q))
    absmax = _per_group(np.abs(w), np.max)
    _within(_per_group(err, np.max), (absmax / 127 * (1 + F16_STEP) + F16_SUBNORMAL) / 2)


def test_int4_is_within_half_a_step_of_range_over_15():
    w = _weights()
    q = quantize.quantize(w, "int4")
    assert q.fmt == "Q4_1" and q.codes.shape == (48, 8, 16) and q.mins.dtype == np.float16
    err = np.abs(_dense(q) - w)
    _within(err, quantize.bound(q))
    lo, hi = _per_group(w, np.min), _per_group(w, np.max)
    # the float16 minimum is rounded down by up to 2^-10 of |min|, which widens the range it steps over
    span = hi - lo + np.abs(lo) * F16_STEP + F16_SUBNORMAL
    _within(_per_group(err, np.max), (span / 15 * (1 + F16_STEP) + F16_SUBNORMAL) / 2)


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_zero_groups_come_back_exactly(scheme):
    w = np.zeros((64, 3), np.float32)
    w[32:, 1] = 1.0
    np.testing.assert_array_equal(_dense(quantize.quantize(w, scheme))[:32], w[:32])


def test_int4_keeps_a_constant_group_at_its_float16_minimum():
    w = np.full((32, 2), 0.5, np.float32)  # range 0: step 0, every code 0, the value in m
    np.testing.assert_array_equal(_dense(quantize.quantize(w, "int4")), w)


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_stacked_layers_quantize_one_by_one(scheme):
    w = np.stack([_weights(seed=1), _weights(seed=2)])
    q = quantize.quantize(w, scheme)
    assert q.shape == (2, 256, 48)
    for i in range(2):
        np.testing.assert_array_equal(_dense(q)[i], _dense(quantize.quantize(w[i], scheme)))


def _gguf_blocks(q):
    """The GGUF block bytes of a [K, N] weight in quantized.py's layout (from_gguf's inverse)."""
    parts = [q.scales[..., None].view(np.uint8)]
    if q.mins is not None:
        parts.append(q.mins[..., None].view(np.uint8))
    parts.append(q.codes.view(np.uint8))
    return np.concatenate(parts, axis=-1).reshape(-1)


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_the_layout_is_gguf_s_own_bit_for_bit(scheme):
    gguf = pytest.importorskip("gguf")
    w = _weights(k=96, n=24, seed=3)
    q = quantize.quantize(w, scheme)
    qtype = gguf.GGMLQuantizationType[quantize.FORMATS[scheme]]
    expected = gguf.quants.dequantize(_gguf_blocks(q), qtype).reshape(24, 96)
    got = quantized.dequantize_numpy(q)
    np.testing.assert_array_equal(got.view(np.uint32), expected.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("scheme", ["int8", "int4"])
@pytest.mark.parametrize("implementation", ["native", "xla"])
@pytest.mark.parametrize("rows,k,n,valid", [(1, 64, 40, 1), (7, 96, 33, 6), (21, 576, 17, 19)])
def test_linear_matches_the_reference(scheme, implementation, rows, k, n, valid):
    if implementation == "native" and native_quantized.available() is not None:
        pytest.skip(native_quantized.available())
    w = quantized.to_device(quantize.quantize(np.stack([_weights(k, n, s) for s in range(2)]), scheme))
    x = jnp.asarray(np.random.default_rng(4).standard_normal((rows, k)), jnp.float32)
    got = jax.jit(lambda x, w: api.linear(x, w, 1, valid, implementation=implementation))(x, w)
    expected = reference_linear(x, w, 1, valid)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))
    assert not np.asarray(got)[valid:].any()


@pytest.mark.parametrize(
    "w,scheme,message",
    [
        (np.zeros((48, 4)), "int8", "K a multiple of 32"),
        (np.zeros(64), "int8", "K a multiple of 32"),
        (np.full((32, 2), np.nan), "int4", "NaN or infinity"),
        (np.full((32, 2), 1e7), "int8", "beyond float16's range"),
        (np.full((32, 2), -1e6), "int4", "beyond float16's range"),
        (np.zeros((32, 2)), "int3", "unknown quantization 'int3'"),
    ],
)
def test_bad_input_is_a_clear_error(w, scheme, message):
    with pytest.raises(ValueError, match=message):
        quantize.quantize(w, scheme)
