"""The matmul op's K-quant layouts (GGUF Q4_K, Q5_K, Q6_K kept in their own super-block factors): lossless
against gguf.quants.dequantize, and `linear` on them (XLA and the native kernel)
against the reference on ragged rows and odd N."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.matmul import api, native_quantized, quantized
from pallas_kernels.matmul.reference import reference_linear
from trellis_testing.kquant_blocks import random_k_quant

gguf = pytest.importorskip("gguf")


def _random(fmt, n, k, layers=None, seed=0):
    """A QuantizedWeight [.., K, N] from random raw blocks, and gguf's dequantization of them [.., N, K]."""
    rng = np.random.default_rng(seed)
    qtype = gguf.GGMLQuantizationType[fmt]
    made = []
    for _ in range(layers or 1):
        raw = random_k_quant(fmt, n, k, rng, scale=0.05)
        made.append((quantized.from_gguf(raw, fmt, n, k), gguf.quants.dequantize(raw, qtype).reshape(n, k)))
    if layers is None:
        return made[0]
    return quantized.stack([w for w, _ in made]), np.stack([d for _, d in made])


def _bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


@pytest.mark.parametrize("fmt", quantized.K_QUANTS)
def test_the_repacking_is_gguf_s_dequantization_bit_for_bit(fmt):
    w, expected = _random(fmt, 37, 768, seed=3)
    np.testing.assert_array_equal(_bits(quantized.dequantize_numpy(w)), _bits(expected))


@pytest.mark.parametrize("fmt", quantized.K_QUANTS)
def test_the_jnp_dequantization_is_gguf_s_bit_for_bit(fmt):
    w, expected = _random(fmt, 24, 512, seed=4)
    got = jax.jit(quantized.dequantize)(quantized.to_device(w))
    np.testing.assert_array_equal(_bits(got), _bits(expected))


@pytest.mark.parametrize("fmt,ints", [("Q4_K", np.uint8), ("Q5_K", np.uint8), ("Q6_K", np.int8)])
def test_factors_are_the_file_s_float16_super_block_ones_and_8_bit_group_ones(fmt, ints):
    # not float32 products per group: the kernel forms d*sc (exact in float32) from these
    w, _ = _random(fmt, 8, 512)
    per_super = 1 if fmt == "Q6_K" else 2
    assert w.scales.dtype == np.float16 and w.scales.shape == (8, 2, per_super)
    assert w.mins.dtype == ints and w.mins.shape == (8, 16, 2)


@pytest.mark.parametrize("fmt,bytes_per_weight", [("Q4_K", 0.578), ("Q5_K", 1.078), ("Q6_K", 0.820)])
def test_bytes_per_weight(fmt, bytes_per_weight):
    w, _ = _random(fmt, 16, 1024)
    assert w.nbytes / (16 * 1024) == pytest.approx(bytes_per_weight, abs=1e-3)


@pytest.mark.parametrize("fmt,code_bytes", [("Q4_K", 16), ("Q5_K", 32), ("Q6_K", 24)])
def test_shape_is_the_logical_in_out_matrix(fmt, code_bytes):
    w, _ = _random(fmt, 40, 512, layers=3)
    assert w.shape == (3, 512, 40) and w.codes.shape == (3, 40, 512 // 32, code_bytes)


@pytest.mark.parametrize("fmt", quantized.K_QUANTS)
@pytest.mark.parametrize("rows,k,n,valid", [(1, 256, 40, 1), (5, 512, 33, 3), (8, 256, 7, 8), (70, 768, 9, 66)])
def test_linear_matches_the_reference(fmt, rows, k, n, valid):
    w, dense = _random(fmt, n, k, layers=2, seed=rows)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((rows, k)), jnp.float32)
    got = jax.jit(lambda x, w: api.linear(x, w, 1, valid))(x, w)
    expected = np.asarray(x, np.float64) @ dense[1].T.astype(np.float64)
    expected[valid:] = 0
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(got, reference_linear(x, w, 1, valid), rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("fmt", quantized.K_QUANTS)
@pytest.mark.parametrize(
    "rows,k,n,valid", [(1, 256, 40, 1), (1, 1536, 203, 1), (2, 768, 192, 1), (7, 512, 33, 6), (21, 256, 9, 19)]
)
def test_native_matches_the_reference(fmt, rows, k, n, valid):
    if native_quantized.available() is not None:
        pytest.skip(native_quantized.available())
    w, _ = _random(fmt, n, k, layers=3, seed=k + n)
    x = jnp.asarray(np.random.default_rng(2).standard_normal((rows, k)), jnp.float32)
    assert api.choose(x, w) == "native"
    for layer in range(3):
        got = jax.jit(lambda x, w, l: api.linear(x, w, l, valid, implementation="native"))(x, w, jnp.int32(layer))
        expected = reference_linear(x, w, layer, valid)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))
        assert not np.asarray(got)[valid:].any()


def _mixed(k=512, n=33, seed=7):
    """Four layers in Q4_K, Q6_K, Q5_K, Q6_K as a LayerMix, and gguf's dequantization of each [4, N, K]."""
    parts = [_random(fmt, n, k, seed=seed + i) for i, fmt in enumerate(("Q4_K", "Q6_K", "Q5_K", "Q6_K"))]
    return quantized.mix([w for w, _ in parts]), np.stack([d for _, d in parts])


def test_layers_of_differing_formats_stay_each_in_its_own():
    w, _ = _mixed()
    assert [part.fmt for part in w.parts] == ["Q4_K", "Q6_K", "Q5_K"] and w.which == (0, 1, 2, 1)
    assert w.index == (0, 0, 0, 1) and w.shape == (4, 512, 33)
    assert w.nbytes == sum(part.nbytes for part in w.parts)


def test_a_layer_mix_dequantizes_each_layer_as_gguf_does_bit_for_bit():
    w, expected = _mixed()
    for layer in range(4):
        got = jax.jit(quantized.dequantize_layer)(w, jnp.int32(layer))
        np.testing.assert_array_equal(_bits(got), _bits(expected[layer]), err_msg=f"layer {layer}")


@pytest.mark.parametrize("implementation", ("native", "xla"))
@pytest.mark.parametrize("rows,valid", [(1, 1), (9, 7)])
def test_layer_mix_linear_matches_the_reference(implementation, rows, valid):
    if implementation == "native" and native_quantized.available() is not None:
        pytest.skip(native_quantized.available())
    w, dense = _mixed()
    x = jnp.asarray(np.random.default_rng(5).standard_normal((rows, 512)), jnp.float32)
    step = jax.jit(lambda x, w, l: api.linear(x, w, l, valid, implementation=implementation))
    for layer in range(4):
        got = step(x, w, jnp.int32(layer))
        expected = np.asarray(x, np.float64) @ dense[layer].T.astype(np.float64)
        expected[valid:] = 0
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))


def test_a_width_not_a_whole_super_block_is_refused():
    with pytest.raises(ValueError, match="not a whole number of 256-element super-blocks"):
        quantized.from_gguf(np.zeros(144, np.uint8), "Q4_K", 2, 128)
