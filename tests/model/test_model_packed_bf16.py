"""A bfloat16 model with its matmul weights packed as row pairs (params.with_packed_matmuls) computes
what the unpacked bfloat16 model computes, through the native AVX512_BF16 kernel or its reference."""

import numpy as np
import pytest
from model_testlib import prefill_then_decode

from pallas_kernels.matmul import native_bf16
from pallas_kernels.matmul.layouts import with_fused_projections, with_materialised_head, with_packed_matmuls
from trellis_jax.model import check_params

PROMPT = np.random.default_rng(7).integers(3, 320, 21).tolist()


def _prefill_then_decode(config, params):
    """-> (prefill logits, decode logits)."""
    return prefill_then_decode(config, params, PROMPT)[:2]


def _packed(loaded):
    return with_packed_matmuls(with_fused_projections(with_materialised_head(loaded.params, loaded.config)))


def _assert_bf16_close(a, b):
    np.testing.assert_allclose(a, b, rtol=2e-2, atol=2e-2 * float(np.abs(b).max()))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_packed_params_pass_the_shape_check(tiny_model, arch):
    loaded = tiny_model(arch, "bfloat16")
    packed = _packed(loaded)
    assert all(value.shape[-1] == 2 for name, value in packed["layers"].items() if name.startswith("w"))
    check_params(packed, loaded.config)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_packed_model_matches_the_unpacked_one(tiny_model, arch):
    loaded = tiny_model(arch, "bfloat16")
    for packed, plain in zip(
        _prefill_then_decode(loaded.config, _packed(loaded)), _prefill_then_decode(loaded.config, loaded.params)
    ):
        _assert_bf16_close(packed, plain)


def test_reference_path_matches_the_native_one(tiny_model, monkeypatch):
    if reason := native_bf16.available():
        pytest.skip(reason)
    loaded = tiny_model("llama", "bfloat16")
    native = _prefill_then_decode(loaded.config, _packed(loaded))
    monkeypatch.setattr(native_bf16, "available", lambda: "turned off for this test")
    for a, b in zip(native, _prefill_then_decode(loaded.config, _packed(loaded))):
        _assert_bf16_close(a, b)


def test_runner_packs_bf16_pairs_only_for_bfloat16_models(tiny_model):
    from trellis_jax.runner import Runner

    packed = Runner(tiny_model("llama", "bfloat16"), num_pages=8, token_buckets=(2,), seq_buckets=(2,), pack_bf16=True)
    assert native_bf16.is_packed(packed.params["layers"]["w_qkv"])
    with pytest.raises(ValueError, match="pack_bf16 needs a bfloat16 model"):
        Runner(tiny_model("llama"), num_pages=8, token_buckets=(2,), seq_buckets=(2,), pack_bf16=True)


def test_runner_warns_when_a_bf16_model_cannot_use_the_native_kernel(tiny_model, caplog):
    from trellis_jax.runner import Runner

    with caplog.at_level("WARNING", logger="trellis_jax.runner.runner"):
        Runner(tiny_model("llama", "bfloat16"), num_pages=8, token_buckets=(2,), seq_buckets=(2,), pack_bf16=False)
    assert "--dtype float32 is faster here" in caplog.text
