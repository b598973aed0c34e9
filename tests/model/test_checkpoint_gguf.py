"""GGUF loading on tiny files written like llama.cpp does: dequantization, Q/K un-permutation, metadata."""

import numpy as np
import pytest
from checkpoint_testlib import hf_tensors, write_tiny_gguf
from model_testlib import logits_at_positions, read_reference

from trellis_jax.checkpoints import LoadedModel
from trellis_jax.checkpoints.gguf_loader import load_gguf_weights

gguf = pytest.importorskip("gguf")


def load_as_model(path):
    config, params = load_gguf_weights(path)
    return LoadedModel(config, params, None, str(path))


@pytest.mark.parametrize("arch", ("llama", "qwen2"))
def test_f32_gguf_reproduces_transformers_logits(arch, tmp_path, fixtures_dir):
    # llama: permuted Q/K rows + Llama-3 scaling as rope_freqs; qwen2: no permutation, q/k/v bias, tied.
    loaded = load_as_model(write_tiny_gguf(tmp_path / "m.gguf", fixtures_dir / f"tiny_{arch}"))
    case = read_reference(fixtures_dir / f"tiny_{arch}_reference.npz")[-1]
    ours = logits_at_positions(loaded, case["prompt"], case["positions"])
    assert np.abs(ours - case["logits"]).max() <= 1e-3


@pytest.mark.parametrize("qtype", ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16", "BF16"))
def test_quantized_weights_dequantize_to_the_gguf_reference(qtype, tmp_path, fixtures_dir):
    from gguf import quants

    hf_dir = fixtures_dir / "tiny_llama"
    _, params = load_gguf_weights(write_tiny_gguf(tmp_path / "m.gguf", hf_dir, qtype))
    original = hf_tensors(hf_dir)
    for hf_name, ours in (
        ("model.layers.1.self_attn.q_proj.weight", params["layers"]["wq"][1]),
        ("model.layers.0.mlp.down_proj.weight", params["layers"]["w_down"][0]),
        ("lm_head.weight", params["lm_head"]),
    ):
        # quantization works on row blocks, so it commutes with llama.cpp's row permutation
        expected = quants.dequantize(
            quants.quantize(original[hf_name], gguf.GGMLQuantizationType[qtype]), gguf.GGMLQuantizationType[qtype]
        ).reshape(original[hf_name].shape)
        np.testing.assert_array_equal(np.asarray(ours), expected.T, err_msg=hf_name)


def test_config_comes_from_metadata(tmp_path, fixtures_dir):
    config, _ = load_gguf_weights(write_tiny_gguf(tmp_path / "m.gguf", fixtures_dir / "tiny_mistral"))
    assert (config.num_layers, config.num_heads, config.num_kv_heads, config.head_dim) == (2, 4, 2, 16)
    assert config.sliding_window == 6 and not config.tie_word_embeddings


def test_default_model_config(default_model):
    c = default_model.config
    assert (c.architecture, c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads) == ("llama", 30, 576, 9, 3)
    assert c.tie_word_embeddings and c.vocab_size == 49152 and "lm_head" not in default_model.params
