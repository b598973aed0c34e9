"""weight_format="packed" on GGUF K-quants (Q4_K, Q5_K, Q6_K): a tiny GGUF whose matrices are random
K-quant blocks loads them packed, bit-faithful to the float loader's dequantization, and the model computes
the float model's logits; a matrix mixing K-quants across layers (as Q4_K_M files do) loads packed too,
each layer in its own format."""

import numpy as np
import pytest
from model_testlib import logits_at_positions

from pallas_kernels.matmul import quantized
from trellis_jax.checkpoints import LoadedModel
from trellis_jax.checkpoints.gguf_loader import load_gguf_weights
from trellis_testing.kquant_blocks import random_k_quant

gguf = pytest.importorskip("gguf")

H, FFN, HEADS, KV_HEADS, HEAD_DIM, LAYERS, VOCAB = 256, 512, 4, 2, 64, 2, 320
_MATRICES = {  # GGUF name -> [rows (outputs), cols (inputs)]
    "attn_q.weight": (HEADS * HEAD_DIM, H),
    "attn_k.weight": (KV_HEADS * HEAD_DIM, H),
    "attn_v.weight": (KV_HEADS * HEAD_DIM, H),
    "attn_output.weight": (H, HEADS * HEAD_DIM),
    "ffn_gate.weight": (FFN, H),
    "ffn_up.weight": (FFN, H),
    "ffn_down.weight": (H, FFN),
}


def _write(path, fmt_of):
    """A tiny llama GGUF; `fmt_of(layer, name)` -> the K-quant of that matrix (layer None: the head/embedding)."""
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in {
        "block_count": LAYERS,
        "context_length": 256,
        "embedding_length": H,
        "feed_forward_length": FFN,
        "attention.head_count": HEADS,
        "attention.head_count_kv": KV_HEADS,
        "vocab_size": VOCAB,
    }.items():
        writer.add_uint32(f"llama.{key}", value)
    writer.add_float32("llama.rope.freq_base", 10000.0)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)

    def add(name, fmt, rows, cols):
        raw = random_k_quant(fmt, rows, cols, rng, scale=3e-5 if fmt == "Q6_K" else 1e-4)
        writer.add_tensor(name, raw.reshape(rows, -1), raw_dtype=gguf.GGMLQuantizationType[fmt])

    add("token_embd.weight", fmt_of(None, "token_embd"), VOCAB, H)
    add("output.weight", fmt_of(None, "output"), VOCAB, H)
    writer.add_tensor("output_norm.weight", np.ones(H, np.float32))
    for i in range(LAYERS):
        for name, (rows, cols) in _MATRICES.items():
            add(f"blk.{i}.{name}", fmt_of(i, name), rows, cols)
        for norm in ("attn_norm.weight", "ffn_norm.weight"):
            writer.add_tensor(f"blk.{i}.{norm}", (1 + 0.1 * rng.standard_normal(H)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _dense(w):
    return np.asarray(quantized.dequantize(w)).swapaxes(-1, -2)  # [..., K, N], as the float loader stores it


@pytest.mark.parametrize("fmt", quantized.K_QUANTS)
def test_k_quant_layers_load_packed_and_equal_the_float_loader_s(fmt, tmp_path):
    path = _write(tmp_path / "m.gguf", lambda layer, name: fmt)
    _, floats = load_gguf_weights(path)
    _, packed = load_gguf_weights(path, weight_format="packed")
    for name in ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"):
        assert quantized.is_quantized(packed["layers"][name]) and packed["layers"][name].fmt == fmt
        np.testing.assert_array_equal(_dense(packed["layers"][name]), np.asarray(floats["layers"][name]), err_msg=name)
    np.testing.assert_array_equal(_dense(packed["lm_head"]), np.asarray(floats["lm_head"]))


def _q4_k_m_like(layer, name):
    # llama.cpp's Q4_K_M: attn_v and ffn_down in Q6_K on some layers, the head in Q6_K, the rest Q4_K.
    return "Q6_K" if (layer, name) in ((0, "ffn_down.weight"), (1, "attn_v.weight"), (None, "output")) else "Q4_K"


@pytest.mark.parametrize("fmt", (*quantized.K_QUANTS, "Q4_K_M-like"))
def test_k_quant_model_logits_match_the_float_model(fmt, tmp_path):
    path = _write(tmp_path / "m.gguf", _q4_k_m_like if fmt == "Q4_K_M-like" else lambda layer, name: fmt)
    models = {
        wf: LoadedModel(*load_gguf_weights(path, weight_format=wf), None, str(path)) for wf in ("float", "packed")
    }
    prompt, positions = list(range(3, 40)), [0, 5, 36]
    expected = logits_at_positions(models["float"], prompt, positions)
    got = logits_at_positions(models["packed"], prompt, positions)
    assert np.isfinite(expected).all() and np.abs(expected).max() > 0
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * float(np.abs(expected).max()))


def test_a_matrix_whose_format_differs_between_layers_keeps_each_layer_in_its_own(tmp_path):
    # Q4_K_M's attn_v and ffn_down: Q6_K on some layers, Q4_K on the others; no common (bigger) layout
    path = _write(tmp_path / "m.gguf", _q4_k_m_like)
    _, floats = load_gguf_weights(path)
    _, packed = load_gguf_weights(path, weight_format="packed")
    assert packed["layers"]["w_up"].fmt == "Q4_K"
    for name, formats in (("w_down", ["Q6_K", "Q4_K"]), ("wv", ["Q4_K", "Q6_K"])):  # layer 0's first
        w = packed["layers"][name]
        assert quantized.is_layer_mix(w) and [p.fmt for p in w.parts] == formats and w.which == (0, 1)
        for layer in range(LAYERS):
            got = np.asarray(quantized.dequantize_layer(w, layer)).T
            np.testing.assert_array_equal(got, np.asarray(floats["layers"][name][layer]), err_msg=f"{name} {layer}")
