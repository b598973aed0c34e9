"""tools/make_random_gguf.py: the random Q4_K_M-like GGUF it writes (tiny shape, same code as the 8B one) has
llama.cpp's format mix, loads with its tokenizer, and runs to finite logits."""

import numpy as np
import pytest
from model_testlib import logits_at_positions

from tools import make_random_gguf as mk
from trellis_jax.checkpoints import load_model

pytest.importorskip("gguf")


def test_more_bits_picks_llama_cpp_s_layers_of_a_32_layer_model():
    # the first and last 4, and every third from layer 6 (llama.cpp's use_more_bits for 32 layers)
    chosen = [i for i in range(32) if mk.more_bits(i, 32)]
    assert chosen == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def test_q4_k_m_mix_puts_attn_v_and_ffn_down_in_q6_k_on_more_bits_layers_only(tmp_path):
    kinds = mk.write(tmp_path / "m.gguf", mk.SHAPES["tiny"])
    layers = mk.SHAPES["tiny"].layers
    for i in range(layers):
        expected = "Q6_K" if mk.more_bits(i, layers) else "Q4_K"
        assert (kinds[f"blk.{i}.attn_v.weight"], kinds[f"blk.{i}.ffn_down.weight"]) == (expected, expected)
        assert kinds[f"blk.{i}.ffn_up.weight"] == "Q4_K"
    assert (kinds["output.weight"], kinds["token_embd.weight"]) == ("Q6_K", "Q4_K")


def test_written_file_loads_packed_with_its_tokenizer_and_gives_finite_logits(tmp_path):
    shape = mk.SHAPES["tiny"]
    mk.write(tmp_path / "m.gguf", shape)
    model = load_model(str(tmp_path / "m.gguf"), weight_format="packed")
    assert (model.config.hidden_size, model.config.num_layers, model.config.vocab_size) == (256, 8, 384)
    assert model.tokenizer.vocab_size == shape.vocab and model.tokenizer.encode("hello")
    logits = logits_at_positions(model, list(range(3, 20)), [0, 16])
    assert np.isfinite(logits).all() and np.abs(logits).max() > 0


def test_unknown_mix_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown mix"):
        mk.write(tmp_path / "m.gguf", mk.SHAPES["tiny"], mix="Q3_K")


def test_prepare_fuses_one_format_projections_and_leaves_a_layer_mix_alone(tmp_path):
    # wv is a LayerMix (Q4_K and Q6_K layers): no fused w_qkv; w_gate and w_up are both Q4_K: fused
    from pallas_kernels.matmul import api, quantized

    mk.write(tmp_path / "m.gguf", mk.SHAPES["tiny"])
    model = load_model(str(tmp_path / "m.gguf"), weight_format="packed")
    layers = api.prepare(model.params, model.config, fuse_projections=True)["layers"]
    assert "w_qkv" not in layers and quantized.is_layer_mix(layers["wv"])
    assert layers["w_gate_up"].fmt == "Q4_K" and "w_gate" not in layers
