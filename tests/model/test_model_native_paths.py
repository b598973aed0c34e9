"""The CPU speed paths compute what the plain XLA forward computes.

Small float32 steps on CPU run their matmuls through the matmul op's native kernel (weights read in place)
and, with tied embeddings, can use a materialised embed.T as the LM head; runners may fuse the projections
that read the same input (w_qkv, w_gate_up) and store the matrices as column strips (with_packed_matmuls). Same prompt, decode step after prefill, with and without
each: logits and written K/V agree to float32 rounding.
"""

import numpy as np
import pytest
from model_testlib import prefill_then_decode

from pallas_kernels.matmul import native_f32
from pallas_kernels.matmul.layouts import with_fused_projections, with_materialised_head, with_packed_matmuls
from trellis_jax.model import check_params

PROMPT = np.random.default_rng(5).integers(3, 320, 19).tolist()


def _prefill_then_decode(config, params):
    """-> (decode logits, k pages, v pages)."""
    return prefill_then_decode(config, params, PROMPT)[1:]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_native_matmuls_match_xla(tiny_model, monkeypatch, arch):
    loaded = tiny_model(arch)
    native = _prefill_then_decode(loaded.config, loaded.params)
    monkeypatch.setattr(native_f32, "available", lambda: "turned off for this test")
    plain = _prefill_then_decode(loaded.config, loaded.params)
    for a, b in zip(native, plain):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


def test_materialised_head_matches_the_tied_embedding(tiny_model):
    loaded = tiny_model("qwen2")  # tied embeddings
    with_head = with_materialised_head(loaded.params, loaded.config)
    np.testing.assert_array_equal(with_head["lm_head"], np.asarray(loaded.params["embed"]).T)
    check_params(with_head, loaded.config)
    for a, b in zip(_prefill_then_decode(loaded.config, with_head), _prefill_then_decode(loaded.config, loaded.params)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


def test_untied_params_are_left_alone(tiny_model):
    loaded = tiny_model("llama")
    assert with_materialised_head(loaded.params, loaded.config) is loaded.params


def test_a_misshapen_materialised_head_is_refused(tiny_model):
    loaded = tiny_model("qwen2")
    bad = {**loaded.params, "lm_head": loaded.params["embed"]}  # [V, H], not [H, V]
    with pytest.raises(ValueError, match="lm_head has shape"):
        check_params(bad, loaded.config)


def test_runner_keeps_the_tied_embedding_alone_when_told(tiny_model):
    from trellis_jax.runner import Runner

    loaded = tiny_model("qwen2")
    plain = Runner(loaded, num_pages=8, token_buckets=(2,), seq_buckets=(2,), materialise_head=False)
    copied = Runner(
        loaded, num_pages=8, token_buckets=(2,), seq_buckets=(2,), materialise_head=True, pack_f32=False
    )  # the head as it is materialised, not packed
    assert "lm_head" not in plain.params
    np.testing.assert_array_equal(copied.params["lm_head"], np.asarray(loaded.params["embed"]).T)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])  # qwen2: q/k/v biases stay separate
@pytest.mark.parametrize("native", [True, False])
def test_fused_projections_match_the_separate_ones(tiny_model, monkeypatch, arch, native):
    loaded = tiny_model(arch)
    fused = with_fused_projections(loaded.params)
    assert {"w_qkv", "w_gate_up"} <= set(fused["layers"]) and not {"wq", "wk", "w_up"} & set(fused["layers"])
    check_params(fused, loaded.config)
    if not native:
        monkeypatch.setattr(native_f32, "available", lambda: "turned off for this test")
    for a, b in zip(_prefill_then_decode(loaded.config, fused), _prefill_then_decode(loaded.config, loaded.params)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


def test_a_half_fused_layout_is_refused(tiny_model):
    loaded = tiny_model("llama")
    fused = with_fused_projections(loaded.params)
    both = {**fused, "layers": {**fused["layers"], "wq": loaded.params["layers"]["wq"]}}
    with pytest.raises(ValueError, match="unexpected layers.wq"):
        check_params(both, loaded.config)


def test_runner_fuses_only_when_told_or_where_the_native_matmul_runs(tiny_model):
    from trellis_jax.runner import Runner

    loaded = tiny_model("llama")
    plain = Runner(loaded, num_pages=8, token_buckets=(2,), seq_buckets=(2,), fuse_projections=False)
    fused = Runner(
        loaded, num_pages=8, token_buckets=(2,), seq_buckets=(2,), fuse_projections=True, pack_f32=False
    )  # the fused matrix as it is concatenated, not packed
    assert "wq" in plain.params["layers"] and "w_qkv" not in plain.params["layers"]
    np.testing.assert_array_equal(
        fused.params["layers"]["w_gate_up"][..., : loaded.config.intermediate_size], loaded.params["layers"]["w_gate"]
    )


@pytest.mark.parametrize("native", [True, False])
def test_float32_strips_match_the_plain_layout(tiny_model, monkeypatch, native):
    loaded = tiny_model("qwen2")  # tied: the materialised head is packed too
    plain = with_fused_projections(with_materialised_head(loaded.params, loaded.config))
    strips = with_packed_matmuls(plain)
    assert native_f32.is_strips(strips["layers"]["w_qkv"]) and strips["lm_head"].ndim == 3
    check_params(strips, loaded.config)
    expected = _prefill_then_decode(loaded.config, plain)
    if not native:
        monkeypatch.setattr(native_f32, "available", lambda: "turned off for this test")
    for a, b in zip(_prefill_then_decode(loaded.config, strips), expected):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


def test_runner_stores_float32_strips_where_the_native_kernel_runs_every_step(tiny_model):
    from trellis_jax.runner import Runner

    runner = Runner(tiny_model("llama"), num_pages=8, token_buckets=(2,), seq_buckets=(2,))
    every_step = native_f32.available() is None and native_f32.max_rows() is None
    assert native_f32.is_strips(runner.params["layers"]["w_qkv"]) == every_step
    with pytest.raises(ValueError, match="pack_f32 needs a float32 model"):
        Runner(tiny_model("llama", "bfloat16"), num_pages=8, token_buckets=(2,), seq_buckets=(2,), pack_f32=True)
