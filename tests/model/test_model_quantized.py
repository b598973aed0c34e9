"""The default model loaded with its Q4_1 layer weights kept packed (weight_format="packed") computes the
dequantized-float model's logits within 1e-3 relative, before and after the matmul op's prepare."""

import numpy as np
import pytest
from model_testlib import prefill_then_decode

from pallas_kernels.matmul import layouts, quantized
from trellis_jax.model import check_params

PROMPT = np.random.default_rng(11).integers(3, 40000, 23).tolist()


@pytest.fixture(scope="module")
def packed_model():
    pytest.importorskip("gguf")
    from trellis_jax.checkpoints import load_model

    return load_model(dtype="float32", weight_format="packed")


@pytest.fixture(scope="module")
def float_logits(default_model):
    assert default_model.config.dtype == "float32"
    return prefill_then_decode(default_model.config, default_model.params, PROMPT)[:2]


def _assert_close(got, expected):
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * float(np.abs(expected).max()))


def test_every_layer_matrix_stays_packed(packed_model):
    matrices = {name: w for name, w in packed_model.params["layers"].items() if "norm" not in name}
    assert matrices and all(quantized.is_quantized(w) and w.fmt == "Q4_1" for w in matrices.values())
    check_params(packed_model.params, packed_model.config)


def test_packed_logits_match_the_dequantized_model(packed_model, float_logits):
    for got, expected in zip(prefill_then_decode(packed_model.config, packed_model.params, PROMPT)[:2], float_logits):
        _assert_close(got, expected)


def test_fused_packed_logits_match_the_dequantized_model(packed_model, float_logits):
    params = layouts.with_fused_projections(layouts.with_materialised_head(packed_model.params, packed_model.config))
    assert quantized.is_quantized(params["layers"]["w_qkv"])
    for got, expected in zip(prefill_then_decode(packed_model.config, params, PROMPT)[:2], float_logits):
        _assert_close(got, expected)


def test_packed_layers_take_under_a_sixth_of_the_float32_bytes(packed_model, default_model):
    def layer_bytes(params):
        return sum(w.nbytes for name, w in params["layers"].items() if "norm" not in name)

    # Q4_1: 20 bytes per 32 weights against float32's 128.
    assert layer_bytes(packed_model.params) * 6 < layer_bytes(default_model.params)
