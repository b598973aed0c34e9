"""`quantization="int8" | "int4"` (--quantization): a float checkpoint's matrices quantized at load into the
packed layout, the model's logits staying close to the float model's; every combination it cannot honour is
refused with a clear error."""

import numpy as np
import pytest
from checkpoint_testlib import write_tiny_gguf
from model_testlib import logits_at_positions

from pallas_kernels.matmul import quantized
from trellis_jax.checkpoints import CheckpointError, load_model, save_orbax
from trellis_jax.checkpoints.quantize import MATRICES, quantize_params
from trellis_jax.engine.config import EngineConfig

PROMPT = list(range(3, 67))
POSITIONS = list(range(8, 64))


@pytest.mark.parametrize("scheme,fmt", [("int8", "Q8_0"), ("int4", "Q4_1")])
def test_every_matrix_is_packed_and_the_head_as_q8_0(scheme, fmt, fixtures_dir):
    params = load_model(str(fixtures_dir / "tiny_llama"), quantization=scheme).params  # untied: lm_head too
    assert {name: params["layers"][name].fmt for name in MATRICES} == dict.fromkeys(MATRICES, fmt)
    assert params["embed"].fmt == params["lm_head"].fmt == "Q8_0"
    assert params["embed"].shape == (64, 320)  # stored as its tied head's [H, V], as a GGUF's packed embedding
    assert not quantized.is_quantized(params["layers"]["attn_norm"])


def test_the_input_params_are_left_float(tiny_model):
    model = tiny_model("qwen2")
    quantize_params(model.params, model.config, "int8")
    assert not quantized.is_quantized(model.params["layers"]["wq"])


# Teacher-forced top-1 agreement with the float model over these 56 positions, measured: int8 0.96-0.98,
# int4 0.61-0.66 (tools/quantization_error.py: 0.97 / 0.62 on 580 positions). The tiny models' random
# weights put many top-2 logits within int4's error; the thresholds leave room for a few flips, not for a
# broken quantizer (a wrong code layout or scale scores near 1/320 agreement).
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("scheme,min_agreement,max_logit_diff", [("int8", 0.9, 0.05), ("int4", 0.5, 0.5)])
def test_logits_stay_close_to_the_float_model(arch, scheme, min_agreement, max_logit_diff, tiny_model, fixtures_dir):
    expected = logits_at_positions(tiny_model(arch), PROMPT, POSITIONS)
    got = logits_at_positions(load_model(str(fixtures_dir / f"tiny_{arch}"), quantization=scheme), PROMPT, POSITIONS)
    assert np.mean(got.argmax(-1) == expected.argmax(-1)) >= min_agreement
    assert np.mean(np.abs(got - expected)) <= max_logit_diff


def test_an_orbax_checkpoint_quantizes_like_its_source(tiny_model, tmp_path, fixtures_dir):
    directory = save_orbax(tiny_model("llama"), tmp_path / "ckpt")
    got = load_model(directory, quantization="int4").params["layers"]["w_gate"]
    expected = load_model(str(fixtures_dir / "tiny_llama"), quantization="int4").params["layers"]["w_gate"]
    assert got.fmt == "Q4_1"
    np.testing.assert_array_equal(np.asarray(quantized.dequantize(got)), np.asarray(quantized.dequantize(expected)))


def test_a_quantized_gguf_is_refused(tmp_path, fixtures_dir):
    path = write_tiny_gguf(tmp_path / "m.gguf", fixtures_dir / "tiny_llama", "Q8_0")
    with pytest.raises(CheckpointError, match=r"quantized already \(Q8_0\).*--weight-format packed"):
        load_model(str(path), quantization="int8")


def test_packed_weight_format_is_refused(fixtures_dir):
    with pytest.raises(ValueError, match="cannot be combined with weight_format='packed'"):
        load_model(str(fixtures_dir / "tiny_llama"), quantization="int8", weight_format="packed")


def test_a_matrix_that_does_not_split_into_32_groups_is_named(tiny_model):
    model = tiny_model("llama")
    layers = {**model.params["layers"], "w_down": np.zeros((2, 80, 64), np.float32)}
    with pytest.raises(ValueError, match=r"cannot quantize w_down \(80, 64\).*multiple of 32"):
        quantize_params({**model.params, "layers": layers}, model.config, "int8")


@pytest.mark.parametrize(
    "options,message",
    [
        ({"quantization": "int3"}, "quantization must be one of"),
        ({"quantization": "int8", "weight_format": "float"}, "cannot be combined with weight_format='float'"),
        ({"quantization": "int4", "weight_format": "packed"}, "cannot be combined with weight_format='packed'"),
        ({"quantization": "int8", "deterministic": True}, "deterministic=True needs float weights"),
    ],
)
def test_the_engine_config_refuses_what_it_cannot_honour(options, message):
    with pytest.raises(ValueError, match=message):
        EngineConfig(**options)
