"""The native CPU extend (prefill) kernel against the numpy oracle, beyond the backend x case product.

`test_kernels_backends` runs "cpu_native" at its defaults, where page size 16 takes this kernel and other
page sizes the XLA extend strategy. Here the kernel is forced (`native_extend=True`) over what its
16-row query tiles and lane layout must get right: row counts that are not multiples of 16, tiles whose
rows see different numbers of pages (causal edge inside a page), long cached prefixes, GQA groups of 1,
4 and 8 (16*G lanes), head dims 128 and one that is not a multiple of 8, bfloat16 pages with a soft cap,
sliding windows that start mid-page, and the portable loops (page size 8, not vectorised). Run with
TRELLIS_NATIVE_CFLAGS=-mno-avx512f, the same tests check the AVX2 + FMA path. Decode rows
in the same batch stay with the decode kernel; padded rows and sequences stay zero / untouched.
"""

import dataclasses
import os

import jax.numpy as jnp
import numpy as np
import pytest
from kernels_testlib import SMOLLM, Case, assert_close, dense_attention, make_case, run_against_oracle

from pallas_kernels.ragged_paged_attention.cpu_native import native_extend_attention, native_extend_vectorized

RAGGED = Case("ragged_rows", q_lens=(17, 2, 1, 40, 15), kv_lens=(17, 300, 50, 77, 200), **SMOLLM)
LONG_PREFIX = Case("long_prefix", q_lens=(33, 100), kv_lens=(1500, 700), **SMOLLM)
GQA_1 = Case("gqa_1", q_lens=(20, 5), kv_lens=(60, 5), num_kv_heads=2, group=1, head_dim=64)
GQA_4_D128 = Case("gqa_4_d128", q_lens=(31, 3), kv_lens=(90, 40), num_kv_heads=2, group=4, head_dim=128)
GQA_8 = Case("gqa_8", q_lens=(18,), kv_lens=(250,), num_kv_heads=1, group=8, head_dim=64)
ODD_DIM = Case("head_dim_36", q_lens=(19, 1, 7), kv_lens=(45, 30, 7), num_kv_heads=2, group=3, head_dim=36)
BF16_CAP = Case("bf16_soft_cap", q_lens=(24, 1, 9), kv_lens=(130, 64, 9), soft_cap=5.0, dtype="bfloat16", **SMOLLM)
WINDOW = Case("sliding_window", q_lens=(50, 20, 1), kv_lens=(300, 20, 90), sliding_window=37, **SMOLLM)
PORTABLE = Case(
    "page_8_portable", q_lens=(21, 1, 4), kv_lens=(70, 33, 4), page_size=8, num_kv_heads=2, group=3, head_dim=64
)


def run_native_extend(case):
    return run_against_oracle(case, "cpu_native", native_extend=True)


def test_page_size_16_takes_the_vectorised_kernel_where_avx512_or_avx2_is_built():
    flags = open("/proc/cpuinfo").read().split()
    turned_off = "-mno-avx2" in os.environ.get("TRELLIS_NATIVE_CFLAGS", "")
    expected = ("avx512f" in flags or ("avx2" in flags and "fma" in flags)) and not turned_off
    assert native_extend_vectorized(16) == expected
    assert not native_extend_vectorized(8)


@pytest.mark.parametrize("case", [RAGGED, LONG_PREFIX, GQA_1, GQA_4_D128, GQA_8, ODD_DIM, WINDOW, PORTABLE], ids=str)
def test_float32_matches_oracle(case):
    out, expected = run_native_extend(case)
    assert_close(out, expected, "float32")


def test_bfloat16_pages_with_soft_cap_match_oracle():
    out, expected = run_native_extend(BF16_CAP)
    assert_close(out, expected, "bfloat16")


@pytest.mark.parametrize("case", [RAGGED, LONG_PREFIX, GQA_1, GQA_4_D128, GQA_8, ODD_DIM, WINDOW], ids=str)
def test_bfloat16_pages_match_oracle(case):
    """Where AVX512_BF16 builds, head dims that are multiples of 32 take the bf16 dot-product path (Q and the
    probabilities rounded to bf16); head_dim 36 converts the pages to float32 instead."""
    out, expected = run_native_extend(dataclasses.replace(case, dtype="bfloat16"))
    assert_close(out, expected, "bfloat16")


def test_float32_queries_over_bfloat16_pages_keep_float32_math():
    """A float32 model with bfloat16 KV pages: only the pages are rounded, the products stay float32."""
    import jax

    from pallas_kernels.ragged_paged_attention import ragged_paged_attention

    case = dataclasses.replace(LONG_PREFIX, dtype="bfloat16")
    args, kwargs, contiguous = make_case(case)
    q = jnp.asarray(np.random.default_rng(3).standard_normal(args[0].shape), jnp.float32)
    args = (q,) + args[1:]
    out = jax.jit(lambda *a: ragged_paged_attention(*a, implementation="cpu_native", native_extend=True, **kwargs))(
        *args
    )
    assert out.dtype == jnp.float32
    assert_close(out, dense_attention(case, args, contiguous), "float32")


def test_native_and_xla_extend_paths_agree():
    native, _ = run_native_extend(RAGGED)
    xla, _ = run_against_oracle(RAGGED, "cpu_native", native_extend=False)
    assert_close(native, np.asarray(xla, np.float64), "float32")


def test_page_id_past_the_pool_is_an_error_not_a_read():
    args, kwargs, _ = make_case(RAGGED)
    page_table = np.asarray(args[5]).copy()
    page_table[0, 1] = args[1].shape[2] + 3
    bad = (args[0].astype(jnp.float32),) + args[1:5] + (jnp.asarray(page_table),) + args[6:]
    with pytest.raises(Exception, match="paged_extend_attention: page id out of range"):
        native_extend_attention(*bad).block_until_ready()
