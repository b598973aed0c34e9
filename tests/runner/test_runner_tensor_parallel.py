"""Tensor parallelism (runner/tensor_parallel.py): TP 2 and 4 on forced CPU devices match TP 1.

The multi-device runs need XLA_FLAGS set before jax starts, so they run in a child process (tp_child.py)
with four forced CPU devices: one child runs every tiny-model job (the session fixture `tp_results`), each
test reads its own job; the size checks run here, on this process's single device.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from runner_helpers import TINY
from tp_jobs import job_result, run_job

from trellis_jax.checkpoints import CheckpointError
from trellis_jax.checkpoints.default_model import default_gguf_path
from trellis_jax.engine.config import EngineConfig
from trellis_jax.model import build_step_inputs, init_kv_pages, init_params, jit_forward, sequential_page_tables
from trellis_jax.runner import Runner
from trellis_jax.runner.tensor_parallel import pad_params, padded_config, split_params

LOGPROB_TOLERANCE = 1e-5


def assert_same_as_tp1(runs: dict, tolerance: float = LOGPROB_TOLERANCE) -> None:
    base = runs["1/nocache"] if "1/nocache" in runs else runs["1/cache"]
    for name, rows in runs.items():
        assert [r["tokens"] for r in rows] == [r["tokens"] for r in base], name
        for row, ref in zip(rows, base):
            gap = np.max(np.abs(np.array(row["logprobs"]) - np.array(ref["logprobs"])))
            assert gap <= tolerance, (name, gap)


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_qwen2", "tiny_mistral"])
def test_tp_2_and_4_match_tp_1_with_the_cache_off_and_on(arch, tp_results):
    runs = job_result(tp_results, arch)
    assert_same_as_tp1(runs)
    assert any(row["cached"] > 0 for row in runs["4/cache"])  # the second pass did read cached pages


@pytest.mark.slow
def test_default_model_at_tp_2_matches_tp_1():
    pytest.importorskip("gguf")
    try:
        default_gguf_path()  # finds the file without loading it (the child loads it)
    except CheckpointError as error:
        pytest.skip(str(error))
    # 30 layers of psum-reordered float32 sums: logprobs of magnitude ~10 moved by up to 4e-5 (measured).
    runs = run_job("generate", "", "1,2", "on")
    assert_same_as_tp1(runs, tolerance=1e-4)


def test_no_compiles_after_warm_up_at_tp_2_and_4(tp_results):
    counts = job_result(tp_results, "compiles")
    assert counts == {"2": {"xla": 0, "runner": 0}, "4": {"xla": 0, "runner": 0}}


@pytest.fixture(scope="module")
def kv_bytes(tp_results) -> dict:
    """size -> the KV pool's bytes in all and per device, tiny_llama (2 KV heads) at TP 1, 2 and 4."""
    return job_result(tp_results, "kv_bytes")


def test_kv_bytes_per_device_are_one_nth_where_the_heads_divide(kv_bytes):
    whole = kv_bytes["1"]["total"]
    assert kv_bytes["1"]["per_device"] == [whole]
    assert kv_bytes["2"]["total"] == whole and kv_bytes["2"]["per_device"] == [whole // 2] * 2


def test_padded_kv_heads_cost_whole_groups_per_device(kv_bytes):
    whole = kv_bytes["1"]["total"]  # 2 KV heads padded to 4: ceil(2 / 4) = one head of two per device
    assert kv_bytes["4"]["per_device"] == [whole // 2] * 4


def test_padding_adds_whole_kv_groups_until_the_size_divides():
    config = TINY.replace(num_heads=9, num_kv_heads=3, intermediate_size=1536)  # SmolLM2-135M's heads
    padded = padded_config(config, 2)
    assert (padded.num_heads, padded.num_kv_heads, padded.intermediate_size) == (12, 4, 1536)
    assert padded_config(config, 3) == config


def test_padded_heads_and_mlp_columns_leave_the_logits_unchanged():
    config = TINY.replace(num_heads=6, num_kv_heads=3, intermediate_size=63)  # pads to 8 / 4 heads, 64 columns
    padded = padded_config(config, 2)
    params = init_params(config, jax.random.key(1), scale=0.5)
    tables = sequential_page_tables([7, 3], 4)
    batch = build_step_inputs([[5, 9, 2, 7, 1, 3, 8], [4, 6, 11]], [0, 0], tables, 4, num_token_rows=16)
    logits = {}
    for name, c, p in (("plain", config, params), ("padded", padded, pad_params(params, config, padded))):
        logits[name], _ = jit_forward(p, init_kv_pages(c, 8, 4), batch, config=c, attn_impl="reference")
    np.testing.assert_allclose(np.asarray(logits["padded"]), np.asarray(logits["plain"]), atol=1e-5, rtol=0)


def test_a_shard_holds_its_heads_columns_and_the_replicated_weights_whole():
    params = init_params(TINY, jax.random.key(2))
    shard = split_params(params, 1, 2)  # 4 q heads of 8 dims, 2 KV heads: shard 1 has q heads 2-3, KV head 1
    np.testing.assert_array_equal(shard["layers"]["wq"], params["layers"]["wq"][:, :, 16:32])
    np.testing.assert_array_equal(shard["layers"]["wk"], params["layers"]["wk"][:, :, 8:16])
    np.testing.assert_array_equal(shard["layers"]["wo"], params["layers"]["wo"][:, 16:32, :])
    np.testing.assert_array_equal(shard["layers"]["w_down"], params["layers"]["w_down"][:, 32:64, :])
    np.testing.assert_array_equal(shard["embed"], params["embed"])


@pytest.mark.parametrize("size", [0, -1, 2])
def test_a_size_this_process_cannot_run_is_a_clear_error(size):
    assert len(jax.devices()) == 1
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        Runner(
            (TINY, init_params(TINY, jax.random.key(0))),
            page_size=4,
            num_pages=8,
            token_buckets=(4,),
            tensor_parallel_size=size,
        )


def test_engine_config_refuses_packed_weights_with_tensor_parallelism():
    with pytest.raises(ValueError, match="float weights"):
        EngineConfig(tensor_parallel_size=2, weight_format="packed")
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        EngineConfig(tensor_parallel_size=0)


def test_engine_config_refuses_quantization_with_tensor_parallelism():
    with pytest.raises(ValueError, match="quantization 'int8' packs them"):
        EngineConfig(tensor_parallel_size=2, quantization="int8")
