"""The native CPU decode kernel at non-default knobs, its error paths, and how it is built.

`test_kernels_backends` checks "cpu_native" at its defaults. Here: contexts split into many pieces that
are merged at the end (flash-decoding), including splits that start mid-page under a sliding window;
more (sequence, head) tasks than threads; bfloat16 pages through the vectorised path; a page id past the
pool refused with an error instead of read; and the build cache (one build, reused; a clear reason when
no compiler works or TRELLIS_NATIVE=0).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernels_testlib import SMOLLM, Case, assert_close, make_case, run_against_oracle

from pallas_kernels.native import build, cache_entry
from pallas_kernels.ragged_paged_attention import ragged_paged_attention

LONG = Case("decode_long", q_lens=(1, 1, 1), kv_lens=(700, 33, 260), **SMOLLM)
MANY = Case("decode_many", q_lens=(1,) * 40, kv_lens=tuple(range(1, 400, 10)), **SMOLLM)
WINDOW = Case("window_split", q_lens=(1, 1, 2), kv_lens=(500, 301, 40), sliding_window=75, **SMOLLM)
BF16 = Case("decode_bf16_soft_cap", q_lens=(1, 1, 4), kv_lens=(300, 17, 20), soft_cap=3.0, dtype="bfloat16", **SMOLLM)


def run_native(case, **knobs):
    return run_against_oracle(case, "cpu_native", **knobs)


@pytest.mark.parametrize("min_split_tokens", [16, 48, 100000])
def test_splits_merge_to_the_oracle(min_split_tokens):
    out, expected = run_native(LONG, min_split_tokens=min_split_tokens)
    assert_close(out, expected, "float32")


def test_more_tasks_than_threads():
    out, expected = run_native(MANY)
    assert_close(out, expected, "float32")


@pytest.mark.parametrize("min_split_tokens", [16, 256])
def test_sliding_window_splits_start_mid_page(min_split_tokens):
    out, expected = run_native(WINDOW, min_split_tokens=min_split_tokens)
    assert_close(out, expected, "float32")


def test_bfloat16_pages_with_soft_cap():
    out, expected = run_native(BF16, min_split_tokens=32)
    assert_close(out, expected, "bfloat16")


def test_page_id_past_the_pool_is_an_error_not_a_read():
    args, kwargs, _ = make_case(LONG)
    page_table = np.asarray(args[5]).copy()
    page_table[0, 0] = args[1].shape[2] + 5
    bad = args[:5] + (jnp.asarray(page_table),) + args[6:]
    with pytest.raises(Exception, match="page id out of range"):
        ragged_paged_attention(*bad, implementation="cpu_native", **kwargs).block_until_ready()


def test_library_is_built_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("TRELLIS_NATIVE_CACHE", str(tmp_path))
    compiler = build._compiler()
    include = jax.ffi.include_dir()
    entry = build._entry(build.HERE / "layer_matmul.cc", compiler, include)
    assert entry.parent == tmp_path and cache_entry.verified(entry) is None
    library = build._build(build.HERE / "layer_matmul.cc", entry, compiler, include)
    assert cache_entry.verified(entry) == library
    record = entry.with_name(entry.name + ".sha256")
    assert sorted(tmp_path.iterdir()) == sorted([library, record])  # no temporary left behind
    assert build._entry(build.HERE / "layer_matmul.cc", compiler, include) == entry


def test_a_failing_compiler_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("TRELLIS_NATIVE_CACHE", str(tmp_path))
    with pytest.raises(build.NativeUnavailable, match="compiling paged_decode_attention.cc failed"):
        build._build(build.HERE / "paged_decode_attention.cc", tmp_path / "x.so", "false", "/nonexistent")
    assert list(tmp_path.iterdir()) == []


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("TRELLIS_NATIVE", "0")
    with pytest.raises(build.NativeUnavailable, match="TRELLIS_NATIVE=0"):
        build.load_target("layer_matmul.cc", "TrellisLayerMatmul", "trellis_test_never_registered")


def test_an_unwritable_cache_is_reported_not_raised_as_oserror(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("TRELLIS_NATIVE_CACHE", str(blocker / "native"))
    with pytest.raises(build.NativeUnavailable, match="building layer_matmul.cc in .* failed"):
        build.load_target("layer_matmul.cc", "TrellisLayerMatmul", "trellis_test_unwritable_cache")


def test_a_failed_build_is_not_retried(monkeypatch):
    calls = []

    def failing_build(*args):
        calls.append(args)
        raise build.NativeUnavailable("compiler exploded")

    monkeypatch.setattr(build, "_build_and_register", failing_build)
    for _ in range(3):
        with pytest.raises(build.NativeUnavailable, match="compiler exploded"):
            build.load_target("layer_matmul.cc", "TrellisLayerMatmul", "trellis_test_fails_once")
    assert len(calls) == 1


def test_geometry_past_the_kernel_limits_runs_the_xla_path():
    big = Case(
        "decode_group_16_page_128",
        q_lens=(1, 1),
        kv_lens=(300, 129),
        page_size=128,
        num_kv_heads=1,
        group=16,
        head_dim=64,
    )  # G * S = 2048 > the kernel's 1024
    out, expected = run_native(big)
    assert_close(out, expected, "float32")
