"""The matmul op's XLA path for packed weights on CPU (xla_quantized.py): every format against the reference
on ragged rows, odd N and N that leaves a tail past the last whole chunk; and its temporaries stay
chunk-sized (no float32 copy of the whole matrix)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.matmul import api, quantize, quantized, xla_quantized
from pallas_kernels.matmul.reference import reference_linear
from trellis_testing.kquant_blocks import random_k_quant

gguf = pytest.importorskip("gguf")


def _random(fmt, n, k, layers, seed):
    """A stacked QuantizedWeight [layers, K, N] in `fmt` (gguf's quantizer, or random K-quant blocks)."""
    rng = np.random.default_rng(seed)
    made = []
    for _ in range(layers):
        if fmt in quantized.K_QUANTS:
            raw = random_k_quant(fmt, n, k, rng, scale=0.05)
        else:
            dense = rng.standard_normal((n, k)).astype(np.float32)
            raw = gguf.quants.quantize(dense, gguf.GGMLQuantizationType[fmt])
        made.append(quantized.from_gguf(raw, fmt, n, k))
    return quantized.stack(made)


def _assert_close(got, expected):
    expected = np.asarray(expected)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))


@pytest.mark.parametrize("fmt", quantized.FORMATS)
@pytest.mark.parametrize("rows,n,valid", [(1, 33, 1), (2, 7, 1), (5, 300, 3), (70, 129, 66)])
def test_matches_the_reference_on_ragged_rows_and_odd_n(fmt, rows, n, valid):
    k = 512 if fmt in quantized.K_QUANTS else 96
    w = _random(fmt, n, k, layers=2, seed=rows + n)
    x = jnp.asarray(np.random.default_rng(rows).standard_normal((rows, k)), jnp.float32)
    step = jax.jit(lambda x, w, layer: api.linear(x, w, layer, valid, implementation="xla"))
    for layer in range(2):
        got = step(x, w, jnp.int32(layer))
        _assert_close(got, reference_linear(x, w, layer, valid))
        assert not np.asarray(got)[valid:].any()


# one column; whole chunks and a tail (in each span at M <= SMALL_ROWS); whole chunks only
@pytest.mark.parametrize("n", [1, 200, 384])
@pytest.mark.parametrize("rows", [1, 3, 20])  # padded to 2 and split; split; one loop
def test_the_chunk_loops_cover_every_column(monkeypatch, n, rows):
    monkeypatch.setattr(xla_quantized, "CHUNK_BYTES", 4 * 64 * 128)  # 128 columns of K = 64 per chunk
    monkeypatch.setattr(xla_quantized, "SMALL_CHUNK_BYTES", 4 * 64 * 64)  # 64 columns, two spans
    w = _random("Q4_1", n, 64, layers=1, seed=n)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((rows, 64)), jnp.float32)
    _assert_close(jax.jit(xla_quantized.linear)(x, w, jnp.int32(0)), reference_linear(x, w, 0))


def test_small_steps_take_smaller_chunks_in_two_spans():
    assert xla_quantized.chunk_bytes(2) < xla_quantized.chunk_bytes(9)
    assert (xla_quantized.splits(1), xla_quantized.splits(8), xla_quantized.splits(9)) == (2, 2, 1)


def test_an_unstacked_weight_is_read_without_a_layer():
    w = quantized.to_device(quantize.quantize(np.random.default_rng(3).standard_normal((64, 40)), "int8"))
    x = jnp.asarray(np.random.default_rng(4).standard_normal((1, 64)), jnp.float32)
    _assert_close(jax.jit(lambda x, w: api.linear(x, w, implementation="xla"))(x, w), reference_linear(x, w))


def test_no_float32_copy_of_the_whole_matrix_is_written():
    k, n = 576, 4096  # 9 MiB as float32: 36 chunks
    w = quantized.to_device(quantize.quantize(np.random.default_rng(5).standard_normal((k, n)), "int4"))
    x = jnp.zeros((8, k), jnp.float32)
    compiled = jax.jit(lambda x, w: api.linear(x, w, implementation="xla")).lower(x, w).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp < 4 * xla_quantized.chunk_bytes(8) < 4 * k * n
