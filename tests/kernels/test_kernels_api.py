"""The api's contract: trace-time validation with the offending values, named dispatch, fallback order."""

import jax
import jax.numpy as jnp
import pytest
from kernels_testlib import Case, make_case

from pallas_kernels.ragged_paged_attention import api

CASE = Case("small", q_lens=(2, 1), kv_lens=(5, 3))


def _args(**overrides):
    args, _, _ = make_case(CASE)
    names = ["q", "k_pages", "v_pages", "layer", "kv_lens", "page_table", "cu_q_lens", "num_seqs"]
    values = dict(zip(names, args))
    values.update(overrides)
    return [values[n] for n in names]


def test_cpu_default_is_the_native_kernel_when_it_builds():
    assert api.default_implementation() == "cpu_native"


def test_cpu_default_falls_back_to_xla_when_native_is_disabled(monkeypatch):
    from pallas_kernels.ragged_paged_attention import cpu_native

    monkeypatch.setattr(cpu_native, "load_target", _refuse)
    assert api.default_implementation() == "xla"


def _refuse(*_):
    from pallas_kernels.native.build import NativeUnavailable

    raise NativeUnavailable("disabled for this test")


def test_unknown_implementation_names_the_choices():
    with pytest.raises(ValueError, match="unknown implementation 'cuda'.*reference"):
        api.ragged_paged_attention(*_args(), implementation="cuda")


def test_named_gpu_backend_fails_fast_on_cpu():
    with pytest.raises(api.UnavailableError, match="pallas_triton.*needs an NVIDIA GPU"):
        api.ragged_paged_attention(*_args(), implementation="pallas_triton")


def test_head_mismatch_reports_both_counts():
    q = jnp.zeros((5, 5, 64))
    with pytest.raises(ValueError, match=r"q heads \(5\) must be a multiple of kv heads \(2\)"):
        api.ragged_paged_attention(*_args(q=q))


def test_head_dim_mismatch_reports_both_dims():
    q = jnp.zeros((5, 6, 32))
    with pytest.raises(ValueError, match=r"head_dim of q \(32\) != head_dim of the pages \(64\)"):
        api.ragged_paged_attention(*_args(q=q))


def test_cu_q_lens_shape_is_checked_at_trace_time():
    bad = jnp.zeros((7,), jnp.int32)
    with pytest.raises(ValueError, match=r"cu_q_lens must be int32\[4\], got int32\[7\]"):
        jax.jit(api.ragged_paged_attention).lower(*_args(cu_q_lens=bad))


def test_float_page_table_is_rejected():
    args = _args()
    with pytest.raises(ValueError, match="page_table must be int32"):
        api.ragged_paged_attention(*_args(page_table=args[5].astype(jnp.float32)))


def test_non_positive_soft_cap_is_rejected():
    with pytest.raises(ValueError, match="soft_cap must be > 0 or None, got 0.0"):
        api.ragged_paged_attention(*_args(), soft_cap=0.0)


def test_lengths_change_without_recompiling():
    args = _args()
    step = jax.jit(api.ragged_paged_attention)
    step(*args)
    shorter = args[4].at[0].set(4)
    step(*args[:4], shorter, *args[5:])
    assert step._cache_size() == 1
