"""The per-request cache figures follow the model's cost formulas; device ceilings resolve by kind."""

from __future__ import annotations

import pytest

from trellis_jax.model import cost
from trellis_jax.model.config import ModelConfig
from trellis_jax.serve.costs import CostModel, ceilings_for

SMOLLM2_135M = ModelConfig(
    architecture="llama",
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_layers=30,
    num_heads=9,
    num_kv_heads=3,
    head_dim=64,
    tie_word_embeddings=True,
)


@pytest.mark.parametrize("prompt, cached", [(100, 32), (48, 48), (17, 0)])
def test_flops_saved_is_full_prefill_minus_uncached_prefill(prompt, cached):
    model = CostModel(SMOLLM2_135M)
    full = cost.prefill_flops(SMOLLM2_135M, prompt)
    assert model.flops_saved(cached) + model.prefill_flops(prompt, cached) == pytest.approx(full, rel=1e-12)


def test_kv_bytes_reread_counts_cached_tokens():
    per_token = 2 * 30 * 3 * 64 * 4  # K and V, layers, kv heads, head_dim, float32
    assert CostModel(SMOLLM2_135M).kv_bytes_reread(10) == 10 * per_token


def test_without_a_model_config_everything_is_zero():
    model = CostModel()
    assert (model.flops_saved(64), model.kv_bytes_reread(64), model.decode_bytes(64, 2)) == (0, 0, 0)


def test_ceilings_by_device_kind_and_overrides():
    h200 = ceilings_for("NVIDIA H200")
    assert (h200.flops_per_s, h200.bytes_per_s) == (989e12, 4.8e12)
    assert ceilings_for("cpu") is None
    assert ceilings_for("cpu", peak_tflops=1.5, peak_gbps=50).bytes_per_s == 50e9


def test_device_peaks_and_the_counters_behind_utilisation_are_exported():
    import re

    import httpx
    from serve_harness import ServerThread, fake_engine

    from trellis_jax.serve.app import ServerSettings, create_app
    from trellis_jax.serve.costs import Ceilings

    engine = fake_engine()
    settings = ServerSettings(model_name="fake-model", cost=CostModel(SMOLLM2_135M), ceilings=Ceilings(1e12, 1e9))
    with ServerThread(create_app(engine, settings)) as server:
        body = {"model": "fake-model", "prompt": "a prompt of a few tokens", "max_tokens": 4, "temperature": 0}
        assert httpx.post(server.url + "/v1/completions", json=body).status_code == 200
        text = httpx.get(server.url + "/metrics").text
    engine.shutdown()

    def value(name):
        return float(re.search(rf'^{name}{{model="fake-model"}} (\S+)', text, re.M).group(1))

    assert (value("trellis_device_peak_flops_per_second"), value("trellis_device_peak_bytes_per_second")) == (1e12, 1e9)
    assert value("trellis_prefill_computed_flops_total") == cost.prefill_flops(SMOLLM2_135M, len(body["prompt"]))
    assert value("trellis_decode_read_bytes_total") > 0


def test_decode_bytes_count_the_weights_as_loaded_when_given():
    config = ModelConfig.from_hf_config(
        {
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 256,
        }
    )
    floats, packed = CostModel(config), CostModel(config, weight_bytes=1000)
    kv = floats.decode_bytes(10, 1) - config.weight_bytes()
    assert packed.decode_bytes(10, 4) == kv + 1000 / 4
