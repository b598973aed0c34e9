"""The Mosaic GPU kernel's logic (TMA page gathers, double buffer, masks, split merge) in the GPU
interpreter on CPU, against the numpy oracle. One representative bf16 case: it is slow to interpret."""

import pytest
from kernels_mosaic_shim import interpret_params
from kernels_testlib import Case, assert_close, dense_attention, make_case

from pallas_kernels.ragged_paged_attention.pallas_mosaic_gpu import mosaic_ragged_paged_attention

CASE = Case(
    "mosaic_mixed",
    q_lens=(1, 5, 1),
    kv_lens=(130, 9, 17),
    num_kv_heads=2,
    group=4,
    dtype="bfloat16",
    extra_seqs=1,
    extra_rows=2,
    soft_cap=3.0,
)


def test_mosaic_kernel_matches_oracle_in_interpreter():
    params = interpret_params()
    if params is None:
        pytest.skip("JAX's Mosaic GPU interpreter is not importable in this version")
    args, kwargs, contiguous = make_case(CASE)
    out = mosaic_ragged_paged_attention(*args, **kwargs, experimental=True, interpret=params)
    assert_close(out, dense_attention(CASE, args, contiguous), CASE.dtype)


def test_mosaic_kernel_refuses_without_opt_in():
    args, kwargs, _ = make_case(CASE)
    with pytest.raises(NotImplementedError, match="experimental=True"):
        mosaic_ragged_paged_attention(*args, **kwargs)
