"""Orbax save/restore round trips and sharded Hugging Face checkpoints load like single-file ones."""

import json

import jax
import numpy as np
import pytest
from checkpoint_testlib import hf_tensors

from trellis_jax.checkpoints import CheckpointError, load_model, save_orbax


def assert_same_params(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("dtype", ("float32", "bfloat16"))
def test_orbax_roundtrip_keeps_params_config_and_tokenizer(dtype, tiny_model, tmp_path):
    original = tiny_model("qwen2", dtype)
    restored = load_model(save_orbax(original, tmp_path / "ckpt"))
    assert restored.config == original.config
    assert_same_params(restored.params, original.params)
    text = "<|im_start|>user\nthe cat sat<|im_end|>"
    assert restored.tokenizer.encode(text) == original.tokenizer.encode(text)
    assert restored.tokenizer.eos_token_ids == original.tokenizer.eos_token_ids
    messages = [{"role": "user", "content": "hi"}]
    assert restored.tokenizer.apply_chat_template(messages) == original.tokenizer.apply_chat_template(messages)


def test_orbax_keeps_llama3_rope_scaling(tiny_model, tmp_path):
    original = tiny_model("llama")
    restored = load_model(str(save_orbax(original, tmp_path / "ckpt")))
    assert restored.config.rope_scaling == original.config.rope_scaling is not None


def test_orbax_refuses_to_overwrite(tiny_model, tmp_path):
    save_orbax(tiny_model("llama"), tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="exists and is not empty"):
        save_orbax(tiny_model("llama"), tmp_path / "ckpt")


def test_sharded_safetensors_match_single_file(tiny_model, fixtures_dir, tmp_path):
    from safetensors.numpy import save_file

    source = fixtures_dir / "tiny_llama"
    tensors = hf_tensors(source)
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for shard, shard_names in shards.items():
        save_file({n: tensors[n] for n in shard_names}, str(tmp_path / shard))
        weight_map.update({n: shard for n in shard_names})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text((source / "config.json").read_text())
    sharded = load_model(str(tmp_path))
    assert sharded.tokenizer is None  # weights-only directory
    assert_same_params(sharded.params, tiny_model("llama").params)


def test_presets_name_the_default_model():
    from trellis_jax.checkpoints import preset_names
    from trellis_jax.checkpoints.presets import resolve_preset

    assert "smollm2-135m" in preset_names()
    assert resolve_preset("smollm2-135m") == (None, None)  # load_model's default model, no dtype pinned


def test_tiny_presets_load_the_fixture_checkpoints(tiny_model):
    loaded = load_model("tiny-mistral")
    assert loaded.source == tiny_model("mistral").source and loaded.config.sliding_window == 6


def test_convert_cli_writes_a_loadable_orbax_dir(tiny_model, fixtures_dir, tmp_path, capsys):
    from trellis_jax.checkpoints.__main__ import main

    assert (
        main(["--model", str(fixtures_dir / "tiny_mistral"), "--out", str(tmp_path / "out"), "--dtype", "bfloat16"])
        == 0
    )
    converted = load_model(str(tmp_path / "out"))
    assert converted.config == tiny_model("mistral", "bfloat16").config
    assert_same_params(converted.params, tiny_model("mistral", "bfloat16").params)


def test_convert_cli_reports_a_bad_source(tmp_path, capsys):
    from trellis_jax.checkpoints.__main__ import main

    assert main(["--model", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert "no config.json" in capsys.readouterr().err
