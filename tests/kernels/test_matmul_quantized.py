"""The matmul op's quantized layout (GGUF Q8_0/Q4_0/Q4_1 kept packed): lossless against gguf.quants, and
`linear` on it against the reference, on ragged rows and odd N."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.matmul import api, native_quantized, quantized
from pallas_kernels.matmul.reference import reference_linear

gguf = pytest.importorskip("gguf")

BLOCK_FORMATS = tuple(f for f in quantized.FORMATS if f not in quantized.K_QUANTS)  # K-quants: test_matmul_kquants.py


def _random(fmt, n, k, layers=None, seed=0):
    """A QuantizedWeight [.., K, N] made by gguf's own quantizer, and gguf's dequantization of it [.., N, K]."""
    rng = np.random.default_rng(seed)
    qtype = gguf.GGMLQuantizationType[fmt]
    made = []
    for _ in range(layers or 1):
        raw = gguf.quants.quantize(rng.standard_normal((n, k)).astype(np.float32), qtype)
        made.append((quantized.from_gguf(raw, fmt, n, k), gguf.quants.dequantize(raw, qtype)))
    if layers is None:
        return made[0]
    return quantized.stack([w for w, _ in made]), np.stack([d for _, d in made])


def _bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


def test_every_tensor_of_the_default_model_repacks_losslessly():
    from trellis_jax.checkpoints.default_model import default_gguf_path

    reader = gguf.GGUFReader(default_gguf_path())
    checked = 0
    for tensor in reader.tensors:
        if tensor.tensor_type.name not in BLOCK_FORMATS:
            continue
        cols, rows = (int(d) for d in tensor.shape)
        w = quantized.from_gguf(tensor.data, tensor.tensor_type.name, rows, cols)
        expected = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(rows, cols)
        np.testing.assert_array_equal(_bits(quantized.dequantize_numpy(w)), _bits(expected), err_msg=tensor.name)
        checked += 1
    assert checked == 211  # 30 layers x 7 Q4_1 matrices + the Q8_0 embedding


@pytest.mark.parametrize("fmt", BLOCK_FORMATS)
def test_the_jnp_dequantization_is_gguf_s_bit_for_bit(fmt):
    w, expected = _random(fmt, 24, 96)
    np.testing.assert_array_equal(_bits(quantized.dequantize(jax.tree.map(jnp.asarray, w))), _bits(expected))


@pytest.mark.parametrize("fmt", BLOCK_FORMATS)
def test_shape_is_the_logical_in_out_matrix(fmt):
    w, _ = _random(fmt, 40, 64, layers=3)
    assert w.shape == (3, 64, 40) and w.ndim == 3


@pytest.mark.parametrize("fmt", BLOCK_FORMATS)
@pytest.mark.parametrize("rows,k,n,valid", [(1, 64, 40, 1), (5, 96, 33, 3), (16, 32, 7, 16)])
def test_linear_matches_the_dequantized_dot(fmt, rows, k, n, valid):
    w, dense = _random(fmt, n, k, layers=2, seed=rows)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((rows, k)), jnp.float32)
    got = jax.jit(lambda x, w: api.linear(x, w, 1, valid))(x, w)
    expected = np.asarray(x) @ dense[1].T
    expected[valid:] = 0
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got, reference_linear(x, w, 1, valid), rtol=1e-6, atol=1e-5)


def test_fused_projections_concatenate_along_n():
    from pallas_kernels.matmul.layouts import with_fused_projections

    sizes = {"wq": 32, "wk": 8, "wv": 8, "w_gate": 16, "w_up": 16}
    parts = {name: _random("Q4_1", n, 64, layers=2, seed=i) for i, (name, n) in enumerate(sizes.items())}
    fused = with_fused_projections({"layers": {name: w for name, (w, _) in parts.items()}})["layers"]
    assert sorted(fused) == ["w_gate_up", "w_qkv"] and fused["w_qkv"].shape == (2, 64, 48)
    expected = np.concatenate([parts[name][1] for name in ("wq", "wk", "wv")], axis=1)  # [L, N, K]
    np.testing.assert_array_equal(_bits(quantized.dequantize(fused["w_qkv"])), _bits(expected))


@pytest.mark.parametrize("fmt", BLOCK_FORMATS)
@pytest.mark.parametrize(
    "rows,k,n,valid",
    [
        (1, 64, 40, 1),
        (1, 96, 43, 1),
        (1, 1536, 203, 1),
        (2, 576, 192, 1),
        (7, 96, 33, 6),
        (16, 32, 17, 16),
        (21, 64, 9, 19),
    ],
)
def test_native_matches_the_reference(fmt, rows, k, n, valid):
    if native_quantized.available() is not None:
        pytest.skip(native_quantized.available())
    w, _ = _random(fmt, n, k, layers=3, seed=k + n)
    x = jnp.asarray(np.random.default_rng(2).standard_normal((rows, k)), jnp.float32)
    for layer in range(3):
        got = jax.jit(lambda x, w, l: api.linear(x, w, l, valid, implementation="native"))(x, w, jnp.int32(layer))
        expected = reference_linear(x, w, layer, valid)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))
        assert not np.asarray(got)[valid:].any()


@pytest.mark.parametrize("fmt", BLOCK_FORMATS)
@pytest.mark.parametrize("rows", [1, 3])
def test_native_keeps_rows_of_tiny_inputs_exact(fmt, rows):
    """The kernel scales x by powers of two down to 2^-12 (layer_matmul_q.cc, position_factor): a row of
    inputs near the bottom of float32's range must come out as precise as any other (no subnormals)."""
    if native_quantized.available() is not None:
        pytest.skip(native_quantized.available())
    w, dense = _random(fmt, 20, 96, layers=1, seed=5)
    x = np.random.default_rng(6).uniform(0.5, 1.0, (rows, 96)).astype(np.float32) * np.float32(2.0**-115)
    got = np.asarray(api.linear(jnp.asarray(x), w, 0, implementation="native"), np.float64)
    expected = x.astype(np.float64) @ dense[0].T.astype(np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))


def test_big_steps_dequantize_then_take_xla_s_dot():
    w, _ = _random("Q4_1", 8, 32, layers=1)
    assert api.choose(jnp.zeros((native_quantized.MAX_ROWS + 1, 32)), w) == "xla"


def test_mismatched_input_width_is_a_clear_error():
    w, _ = _random("Q4_0", 8, 64, layers=1)
    with pytest.raises(ValueError, match=r"Q4_0 weights \[L, K, N\]"):
        api.linear(jnp.zeros((2, 32)), w, 0)


def test_an_unpacked_format_is_refused():
    with pytest.raises(ValueError, match="not a packed format: Q5_0"):
        quantized.from_gguf(np.zeros(22, np.uint8), "Q5_0", 1, 32)
