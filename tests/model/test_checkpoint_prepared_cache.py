"""The prepared-weight cache (checkpoints/prepared_cache.py): a miss builds and stores, a hit maps back the same
model bit for bit without building, a damaged or stale entry is never used, and outputs do not change."""

import json
import logging
import os

import jax
import numpy as np
import pytest
from checkpoint_testlib import write_tiny_gguf

from pallas_kernels.matmul import quantized
from trellis_jax.checkpoints import LoadedModel, load_model
from trellis_jax.checkpoints.gguf_loader import load_gguf_weights
from trellis_jax.checkpoints.prepared_cache import entry_key, load_or_build
from trellis_jax.checkpoints.prepared_store import INDEX, WEIGHTS
from trellis_jax.generate import generate_tokens

pytest.importorskip("gguf")


class CountingBuild:
    """load_or_build's `build` for a tokenizer-less tiny GGUF, counting its calls."""

    def __init__(self, path, weight_format="packed"):
        self.path, self.weight_format, self.calls = str(path), weight_format, 0

    def __call__(self):
        self.calls += 1
        config, params = load_gguf_weights(self.path, "float32", weight_format=self.weight_format)
        return LoadedModel(config, params, None, self.path)

    def load(self, cache_dir):
        return load_or_build(self.path, "float32", self.weight_format, False, str(cache_dir), self)


@pytest.fixture
def tiny_gguf(tmp_path, fixtures_dir):
    return write_tiny_gguf(tmp_path / "m.gguf", fixtures_dir / "tiny_llama", "Q8_0")


def _entry(cache_dir, build):
    return cache_dir / entry_key(build.path, "float32", build.weight_format, False)


def _assert_same_params(a, b):
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_miss_builds_and_stores_then_a_hit_maps_the_same_model_back_without_building(tiny_gguf, tmp_path):
    build = CountingBuild(tiny_gguf)
    first = build.load(tmp_path / "cache")
    second = build.load(tmp_path / "cache")
    assert build.calls == 1
    assert quantized.is_quantized(second.params["layers"]["wq"])
    assert second.config == first.config and second.source == first.source
    _assert_same_params(first.params, second.params)


def test_float_weights_round_trip_too(tiny_gguf, tmp_path):
    build = CountingBuild(tiny_gguf, weight_format="float")
    first, second = build.load(tmp_path / "cache"), build.load(tmp_path / "cache")
    assert build.calls == 1
    _assert_same_params(first.params, second.params)


def test_a_q4_k_m_like_model_s_layer_mixes_round_trip(tmp_path):
    from tools.make_random_gguf import SHAPES, write

    write(tmp_path / "k.gguf", SHAPES["tiny"])
    build = CountingBuild(tmp_path / "k.gguf")
    first, second = build.load(tmp_path / "cache"), build.load(tmp_path / "cache")
    assert build.calls == 1 and quantized.is_layer_mix(second.params["layers"]["w_down"])
    assert second.params["layers"]["w_down"].which == first.params["layers"]["w_down"].which
    _assert_same_params(first.params, second.params)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda e: os.truncate(e / WEIGHTS, os.path.getsize(e / WEIGHTS) // 2), id="truncated"),
        pytest.param(lambda e: _flip_byte(e / WEIGHTS, _last_leaf_offset(e)), id="flipped-byte"),
        pytest.param(lambda e: (e / INDEX).write_text("{not json"), id="garbled-index"),
        pytest.param(lambda e: (e / WEIGHTS).unlink(), id="missing-weights"),
    ],
)
def test_a_damaged_entry_is_deleted_rebuilt_and_stored_afresh(damage, tiny_gguf, tmp_path, caplog):
    build = CountingBuild(tiny_gguf)
    good = build.load(tmp_path / "cache")
    damage(_entry(tmp_path / "cache", build))
    with caplog.at_level(logging.WARNING):
        rebuilt = build.load(tmp_path / "cache")
    assert build.calls == 2
    assert "prepared-weight cache" in caplog.text
    _assert_same_params(good.params, rebuilt.params)
    build.load(tmp_path / "cache")  # the fresh entry reads back
    assert build.calls == 2


def _last_leaf_offset(entry):
    return json.loads((entry / INDEX).read_text())["leaves"][-1]["offset"]


def _flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_rewritten_source_file_is_a_miss(tiny_gguf, tmp_path, fixtures_dir):
    build = CountingBuild(tiny_gguf)
    build.load(tmp_path / "cache")
    write_tiny_gguf(tiny_gguf, fixtures_dir / "tiny_llama", "Q4_0")  # another quantization, same path
    reloaded = build.load(tmp_path / "cache")
    assert build.calls == 2
    assert reloaded.params["layers"]["wq"].fmt == "Q4_0"


def test_a_changed_mtime_alone_is_a_miss(tiny_gguf, tmp_path):
    build = CountingBuild(tiny_gguf)
    build.load(tmp_path / "cache")
    stat = os.stat(tiny_gguf)
    os.utime(tiny_gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    build.load(tmp_path / "cache")
    assert build.calls == 2


def test_the_key_depends_on_dtype_weight_format_and_required_packing(tiny_gguf):
    keys = {
        entry_key(str(tiny_gguf), dtype, fmt, required)
        for dtype in ("float32", "bfloat16")
        for fmt in ("float", "packed")
        for required in (False, True)
    }
    assert len(keys) == 8


def test_no_directory_builds_every_time_and_writes_nothing(tiny_gguf, tmp_path):
    build = CountingBuild(tiny_gguf)
    load_or_build(build.path, "float32", "packed", False, None, build)
    load_or_build(build.path, "float32", "packed", False, None, build)
    assert build.calls == 2
    assert os.listdir(tmp_path) == ["m.gguf"]


def test_an_unwritable_directory_costs_only_a_warning(tiny_gguf, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    build = CountingBuild(tiny_gguf)
    with caplog.at_level(logging.WARNING):
        loaded = load_or_build(build.path, "float32", "packed", False, str(blocker / "cache"), build)
    assert quantized.is_quantized(loaded.params["layers"]["wq"])
    assert "cannot write" in caplog.text


def test_greedy_tokens_are_the_same_from_a_cached_tiny_model(tiny_gguf, tmp_path):
    build = CountingBuild(tiny_gguf)
    fresh, cached = build(), build.load(tmp_path / "cache")
    cached = build.load(tmp_path / "cache")  # the hit
    prompts = [[1, 5, 9, 200, 17], [3, 4]]
    assert generate_tokens(cached, prompts, 6) == generate_tokens(fresh, prompts, 6)


def test_the_default_model_reloads_from_the_cache_with_its_tokenizer_and_the_same_greedy_tokens(tmp_path):
    fresh = load_model(None, weight_format="auto", prepared_cache_dir=str(tmp_path))
    cached = load_model(None, weight_format="auto", prepared_cache_dir=str(tmp_path))
    assert len(os.listdir(tmp_path)) == 1
    _assert_same_params(fresh.params, cached.params)
    a, b = fresh.tokenizer, cached.tokenizer
    assert (b.eos_token_ids, b.bos_token_id, b.add_bos, b.vocab_size) == (
        a.eos_token_ids,
        a.bos_token_id,
        a.add_bos,
        a.vocab_size,
    )
    chat = [{"role": "user", "content": "What is the capital of France? <|im_end|>"}]
    prompt = a.encode_chat(chat)
    assert b.encode_chat(chat) == prompt and b.decode(prompt) == a.decode(prompt)
    assert generate_tokens(cached, [prompt], 4) == generate_tokens(fresh, [prompt], 4)
