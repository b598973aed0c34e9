"""The default model loaded with its Q4_1 layer weights kept packed (weight_format="packed") computes the
dequantized-float model's logits within 1e-3 relative, before and after the matmul op's prepare."""

import jax
import numpy as np
import pytest
from model_testlib import prefill_then_decode

from pallas_kernels.matmul import api, layouts, native_quantized, quantized
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


def test_every_layer_matrix_and_the_embedding_stay_packed(packed_model):
    matrices = {name: w for name, w in packed_model.params["layers"].items() if "norm" not in name}
    assert matrices and all(quantized.is_quantized(w) and w.fmt == "Q4_1" for w in matrices.values())
    embed = packed_model.params["embed"]
    assert quantized.is_quantized(embed) and embed.fmt == "Q8_0" and embed.shape == (576, 49152)
    check_params(packed_model.params, packed_model.config)


def test_packed_logits_match_the_dequantized_model(packed_model, float_logits):
    for got, expected in zip(prefill_then_decode(packed_model.config, packed_model.params, PROMPT)[:2], float_logits):
        _assert_close(got, expected)


def test_packed_logits_on_the_pure_xla_path_match_the_dequantized_model(packed_model, float_logits, monkeypatch):
    monkeypatch.setattr(native_quantized, "available", lambda: "turned off: the XLA fallback under test")
    w = packed_model.params["layers"]["w_up"]
    assert api.choose(jax.ShapeDtypeStruct((1, w.shape[-2]), np.float32), w) == "xla"
    for got, expected in zip(prefill_then_decode(packed_model.config, packed_model.params, PROMPT)[:2], float_logits):
        _assert_close(got, expected)


def test_fused_packed_logits_match_the_dequantized_model(packed_model, float_logits):
    params = layouts.with_fused_projections(layouts.with_materialised_head(packed_model.params, packed_model.config))
    assert quantized.is_quantized(params["layers"]["w_qkv"])
    for got, expected in zip(prefill_then_decode(packed_model.config, params, PROMPT)[:2], float_logits):
        _assert_close(got, expected)


def test_packed_weights_take_under_a_fifth_of_the_float32_bytes(packed_model, default_model):
    def weight_bytes(params):
        return sum(int(leaf.nbytes) for leaf in jax.tree.leaves(params))

    # Q4_1: 20 bytes per 32 weights and Q8_0 34 (the embedding), against float32's 128.
    assert weight_bytes(packed_model.params) * 5 < weight_bytes(default_model.params)  # measured: 96.6 vs 538 MB


def test_a_step_reads_the_packed_bytes_and_not_the_table_beside_a_separate_head(packed_model, default_model):
    from trellis_jax.model.params import streamed_weight_bytes

    config = default_model.config
    float_params = layouts.with_materialised_head(default_model.params, config)
    embed = config.vocab_size * config.hidden_size * 4
    every_leaf = sum(int(leaf.nbytes) for leaf in jax.tree.leaves(float_params))
    assert streamed_weight_bytes(float_params) == every_leaf - embed  # the head is read, the table is not
    assert streamed_weight_bytes(packed_model.params) * 5 < streamed_weight_bytes(float_params)


def test_the_prepared_packed_model_keeps_one_packed_embedding(packed_model):
    params = layouts.with_materialised_head(packed_model.params, packed_model.config)
    assert "lm_head" not in params  # the packed embedding is the head already: no float copy
