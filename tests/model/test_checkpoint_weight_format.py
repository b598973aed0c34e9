"""weight_format="packed": a GGUF's Q8_0/Q4_0/Q4_1 weights load as the matmul op's packed layout, bit-faithful
to the float loader's dequantization (Q/K rows un-permuted too), and the model computes the same logits;
asking for packed where nothing can be packed is an error, "auto" is not."""

import jax
import numpy as np
import pytest
from checkpoint_testlib import write_tiny_gguf
from model_testlib import logits_at_positions

from pallas_kernels.matmul import quantized
from trellis_jax.checkpoints import CheckpointError, LoadedModel, load_model
from trellis_jax.checkpoints.gguf_loader import load_gguf_weights
from trellis_jax.dtypes import resolve_weight_format
from trellis_jax.engine.config import EngineConfig

gguf = pytest.importorskip("gguf")


def _dense(w):
    return np.asarray(quantized.dequantize(w)).swapaxes(-1, -2)  # [..., K, N], as the float loader stores it


@pytest.mark.parametrize(
    "qtype", [f for f in quantized.FORMATS if f not in quantized.K_QUANTS]
)  # K: test_checkpoint_kquants
def test_packed_layers_equal_the_float_loader_s_bit_for_bit(qtype, tmp_path, fixtures_dir):
    path = write_tiny_gguf(tmp_path / "m.gguf", fixtures_dir / "tiny_llama", qtype)
    _, floats = load_gguf_weights(path)
    _, packed = load_gguf_weights(path, weight_format="packed")
    for name in ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"):
        assert quantized.is_quantized(packed["layers"][name]) and packed["layers"][name].fmt == qtype
        np.testing.assert_array_equal(_dense(packed["layers"][name]), np.asarray(floats["layers"][name]), err_msg=name)
    np.testing.assert_array_equal(_dense(packed["lm_head"]), np.asarray(floats["lm_head"]))


@pytest.mark.parametrize("arch", ("llama", "qwen2"))
def test_packed_model_logits_match_the_float_model(arch, tmp_path, fixtures_dir):
    # qwen2: tied embedding (kept packed, looked up by column) and q/k/v biases.
    path = write_tiny_gguf(tmp_path / "m.gguf", fixtures_dir / f"tiny_{arch}", "Q8_0")
    models = {
        fmt: LoadedModel(*load_gguf_weights(path, weight_format=fmt), None, str(path)) for fmt in ("float", "packed")
    }
    prompt, positions = list(range(3, 40)), list(range(37))
    expected = logits_at_positions(models["float"], prompt, positions)
    got = logits_at_positions(models["packed"], prompt, positions)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * float(np.abs(expected).max()))


def test_packed_where_nothing_is_packed_is_an_error(tmp_path, fixtures_dir):
    path = write_tiny_gguf(tmp_path / "m.gguf", fixtures_dir / "tiny_llama", "F16")
    with pytest.raises(CheckpointError, match="no layer weights in"):
        load_gguf_weights(path, weight_format="packed")


def test_auto_loads_a_file_with_nothing_to_pack_as_float(tmp_path, fixtures_dir):
    path = write_tiny_gguf(tmp_path / "m.gguf", fixtures_dir / "tiny_llama", "F16")
    assert resolve_weight_format("auto") == "packed"  # what load_model passes, without requiring it
    _, params = load_gguf_weights(path, weight_format="packed", require_packed=False)
    assert not any(quantized.is_quantized(leaf) for leaf in jax.tree.leaves(params, is_leaf=quantized.is_quantized))


def test_packed_from_a_directory_is_an_error(fixtures_dir):
    with pytest.raises(CheckpointError, match="needs a GGUF file"):
        load_model(str(fixtures_dir / "tiny_llama"), weight_format="packed")


def test_an_unknown_weight_format_is_refused():
    with pytest.raises(ValueError, match="weight_format must be one of"):
        EngineConfig(weight_format="int3")


def test_deterministic_with_packed_weights_is_refused():
    with pytest.raises(ValueError, match="deterministic=True needs float weights"):
        EngineConfig(deterministic=True, weight_format="packed")
