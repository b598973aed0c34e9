"""Every backend of ragged paged attention against the numpy oracle, over a representative product.

The cases cover page sizes 1/16/64, GQA ratios 1/3/4, head dims 64/128, float32/bfloat16, ragged
lengths (1, 3, S-1, S, S+1, long), prefix offsets 0 and > 0, an empty sequence, shuffled page tables,
padding sequences and rows pointing at the sink page, soft-cap and sliding window. Pages nobody owns
are poisoned (kernels_testlib); the Pallas interpreter starts outputs as NaN, so an unwritten row fails.
"""

import jax
import numpy as np
import pytest
from kernels_testlib import Case, assert_close, dense_attention, make_case

from pallas_kernels.ragged_paged_attention import ragged_paged_attention

CASES = [
    Case("decode_ragged_lengths", q_lens=(1,) * 6, kv_lens=(1, 3, 15, 16, 17, 100), extra_seqs=2),
    Case(
        "prefill_offset0_mha_d128", q_lens=(1, 3, 15, 16, 17, 40), kv_lens=(1, 3, 15, 16, 17, 40), group=1, head_dim=128
    ),
    Case(
        "extend_cached_prefix_gqa4_bf16",
        q_lens=(3, 17, 1, 16, 0),
        kv_lens=(23, 33, 48, 17, 9),
        group=4,
        dtype="bfloat16",
    ),
    Case("page_size_1", q_lens=(1, 3, 5), kv_lens=(1, 9, 5), page_size=1, extra_pages=2),
    Case(
        "page_size_64_d128",
        q_lens=(65, 1, 3),
        kv_lens=(65, 130, 67),
        page_size=64,
        group=4,
        head_dim=128,
        num_kv_heads=1,
    ),
    Case("soft_cap", q_lens=(1, 20, 1), kv_lens=(40, 30, 17), soft_cap=2.0, group=1),
    Case("sliding_window_bf16", q_lens=(1, 37, 1), kv_lens=(90, 60, 5), sliding_window=20, dtype="bfloat16"),
]
BACKENDS = ["reference", "xla", "cpu_native", "cpu_batch_invariant", "pallas_interpret"]


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("implementation", BACKENDS)
def test_backend_matches_oracle(implementation, case):
    args, kwargs, contiguous = make_case(case)
    out = jax.jit(lambda *a: ragged_paged_attention(*a, implementation=implementation, **kwargs))(*args)
    assert out.shape == args[0].shape and out.dtype == args[0].dtype
    assert_close(out, dense_attention(case, args, contiguous), case.dtype)


@pytest.mark.parametrize("implementation", BACKENDS)
def test_padding_rows_are_zero(implementation):
    case = CASES[0]
    args, kwargs, _ = make_case(case)
    out = ragged_paged_attention(*args, implementation=implementation, **kwargs)
    num_real_rows = sum(case.q_lens)
    assert np.all(np.asarray(out[num_real_rows:]) == 0)
