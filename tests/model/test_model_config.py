"""ModelConfig parsing and validation, RoPE scaling, and the cost model against hand counts."""

import json

import jax
import numpy as np
import pytest

from trellis_jax.model import ModelConfig, RopeScaling
from trellis_jax.model.rope import inverse_frequencies


def fixture_config(fixtures_dir, arch):
    return ModelConfig.from_hf_config(json.loads((fixtures_dir / f"tiny_{arch}" / "config.json").read_text()))


def test_hf_configs_parse_per_architecture(fixtures_dir):
    llama, qwen2, mistral = (fixture_config(fixtures_dir, a) for a in ("llama", "qwen2", "mistral"))
    assert llama.rope_scaling == RopeScaling(
        "llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64
    )
    assert (qwen2.attention_bias, qwen2.tie_word_embeddings, qwen2.group_size, qwen2.rope_theta) == (True, True, 4, 1e6)
    assert (mistral.sliding_window, mistral.attention_bias, llama.sliding_window) == (6, False, None)


def test_transformers4_style_config_parses():
    hf = {
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": 100,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "linear", "factor": 2.0},
    }
    config = ModelConfig.from_hf_config(hf)
    assert (config.rope_theta, config.rope_scaling, config.head_dim) == (500000.0, RopeScaling("linear", 2.0), 8)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_kv_heads": 3}, "not a multiple"),
        ({"architecture": "gpt2"}, "unknown architecture"),
        ({"head_dim": 15}, "must be even"),
        ({"dtype": "float16"}, "dtype"),
        ({"num_layers": 0}, "positive int"),
    ],
)
def test_invalid_configs_are_rejected(change, message, fixtures_dir):
    with pytest.raises(ValueError, match=message):
        fixture_config(fixtures_dir, "llama").replace(**change)


def test_unsupported_rope_scaling_is_rejected():
    with pytest.raises(ValueError, match="unsupported rope scaling 'yarn'"):
        RopeScaling.from_hf({"rope_type": "yarn", "factor": 4.0})


def test_llama3_scaling_keeps_high_and_slows_low_frequencies():
    scaling = RopeScaling(
        "llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64
    )
    plain = inverse_frequencies(16, 10000.0, None)
    scaled = inverse_frequencies(16, 10000.0, scaling)
    wavelength = 2 * np.pi / plain
    np.testing.assert_array_equal(scaled[wavelength < 16], plain[wavelength < 16])
    np.testing.assert_allclose(scaled[wavelength > 64], plain[wavelength > 64] / 8, rtol=1e-6)
    middle = (wavelength >= 16) & (wavelength <= 64)
    assert middle.any() and np.all(scaled[middle] < plain[middle]) and np.all(scaled[middle] > plain[middle] / 8)


@pytest.mark.parametrize("arch", ("llama", "qwen2"))
def test_num_params_counts_the_loaded_weights(arch, tiny_model):
    loaded = tiny_model(arch)
    assert loaded.config.num_params == sum(x.size for x in jax.tree.leaves(loaded.params))


def test_flops_and_bytes_by_hand(fixtures_dir):
    c = fixture_config(fixtures_dir, "llama")  # L=2, H=64, I=96, Hq=4, Hkv=2, D=16, V=320
    per_layer = 64 * (64 + 2 * 32) + 64 * 64 + 3 * 64 * 96
    assert c.flops_per_token(10) == 2 * (2 * per_layer + 64 * 320) + 2 * 4 * 64 * 10
    assert c.kv_bytes_per_token() == 2 * 2 * 32 * 4
    assert c.kv_bytes_per_token("bfloat16") == 2 * 2 * 32 * 2
    assert c.weight_bytes("bfloat16") == 2 * c.num_params


@pytest.mark.parametrize("arch", ("llama", "mistral"))  # full attention and a sliding window of 6
def test_prefill_flops_sum_per_token_flops(arch, fixtures_dir):
    c = fixture_config(fixtures_dir, arch)
    expected = sum(c.flops_per_token(5 + i + 1) for i in range(12))
    assert c.prefill_flops(12, cached_tokens=5) == expected
    assert c.prefill_flops(12, cached_tokens=5) < c.prefill_flops(17)


def test_default_model_size(default_model):
    counted = sum(x.size for x in jax.tree.leaves(default_model.params))
    assert default_model.config.num_params == counted == 134_515_008  # SmolLM2-135M's published count
