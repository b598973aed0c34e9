"""CPU backend "cpu_native": C++ XLA FFI kernels for decode rows and for prefill/extend rows.

Same contract and semantics as `reference.py`. Rows whose sequence has exactly one new token go to
`pallas_kernels/native/paged_decode_attention.cc` (streams each sequence's pages once at memory speed and
uses XLA's intra-op thread pool); rows of sequences with more new tokens go to
`paged_extend_attention.cc` (16-row query tiles as vector lanes, ~2x XLA's blocked path on AVX-512,
docs/benchmarks/paged-attention-cpu.md) where that build is vectorised for the page size, else to
`xla_cpu`'s tiled extend strategy. The two write disjoint rows and are summed.

Available when the decode kernel builds here (a C++ compiler and jaxlib's FFI headers, which ship with
jaxlib); otherwise `check_available` gives the reason and the platform default falls back to "xla".
"""

from __future__ import annotations

import ctypes

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.native.build import NativeUnavailable, cpu_kernel_unavailable, load_target
from pallas_kernels.ragged_paged_attention.xla_cpu import classify_rows, extend_rows, xla_ragged_paged_attention

TARGET = "trellis_paged_decode_attention"
EXTEND_TARGET = "trellis_paged_extend_attention"
# The kernels keep one page of scores per query head on the stack ([G, S] <= 1024) and rows of <= 256.
MAX_GROUP_TIMES_PAGE, MAX_HEAD_DIM = 1024, 256
_SOURCE, _SYMBOL = "paged_decode_attention.cc", "TrellisPagedDecodeAttention"
_EXTEND_SOURCE, _EXTEND_SYMBOL = "paged_extend_attention.cc", "TrellisPagedExtendAttention"


def check_available(platform_kind):
    """None when the native kernel can run here, else the reason."""
    if platform_kind != "cpu":
        return "the native kernel is a CPU custom call"
    return cpu_kernel_unavailable(lambda: load_target(_SOURCE, _SYMBOL, TARGET))


def native_extend_vectorized(page_size: int) -> bool:
    """Whether the extend kernel builds here with its vectorised path for this page size (its portable
    loops are slower than the XLA strategy, so they are not chosen by default)."""
    try:
        library = load_target(_EXTEND_SOURCE, _EXTEND_SYMBOL, EXTEND_TARGET)
    except NativeUnavailable:
        return False
    return bool(library.TrellisExtendAttentionIsVectorized(ctypes.c_int64(page_size)))


def _ffi_attention(target, q, k_pages, v_pages, layer, kv_lens, page_table, cu_q_lens, num_seqs, **attrs):
    call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(q.shape, jnp.float32), vmap_method="sequential")
    return call(q, k_pages, v_pages, layer, kv_lens, page_table, cu_q_lens, num_seqs, **attrs)


def native_decode_attention(
    q,
    k_pages,
    v_pages,
    layer,
    kv_lens,
    page_table,
    cu_q_lens,
    num_seqs,
    *,
    soft_cap=None,
    sliding_window=None,
    min_split_tokens=256,
):
    """q [T, Hq, D] float32 (already scaled) -> [T, Hq, D] float32; rows that are not decode rows are 0."""
    load_target(_SOURCE, _SYMBOL, TARGET)
    return _ffi_attention(
        TARGET,
        q,
        k_pages,
        v_pages,
        layer,
        kv_lens,
        page_table,
        cu_q_lens,
        num_seqs,
        soft_cap=np.float32(soft_cap or 0.0),
        sliding_window=np.int64(sliding_window or 0),
        min_split_tokens=np.int64(min_split_tokens),
    )


def native_extend_attention(
    q,
    k_pages,
    v_pages,
    layer,
    kv_lens,
    page_table,
    cu_q_lens,
    num_seqs,
    *,
    soft_cap=None,
    sliding_window=None,
    bf16_products=False,
):
    """q [T, Hq, D] float32 (already scaled) -> [T, Hq, D] float32; rows of sequences with one new
    token (decode rows) and padding rows are 0. bf16_products: with bfloat16 pages, multiply in bfloat16
    (q and the probabilities rounded) where the CPU has AVX512_BF16; for models whose q is bfloat16."""
    load_target(_EXTEND_SOURCE, _EXTEND_SYMBOL, EXTEND_TARGET)
    return _ffi_attention(
        EXTEND_TARGET,
        q,
        k_pages,
        v_pages,
        layer,
        kv_lens,
        page_table,
        cu_q_lens,
        num_seqs,
        soft_cap=np.float32(soft_cap or 0.0),
        sliding_window=np.int64(sliding_window or 0),
        bf16_products=bool(bf16_products),
    )


def native_ragged_paged_attention(
    q,
    k_pages,
    v_pages,
    layer,
    kv_lens,
    page_table,
    cu_q_lens,
    num_seqs,
    *,
    sm_scale=None,
    soft_cap=None,
    sliding_window=None,
    min_split_tokens=256,
    native_extend=None,
    prefill_chunk_tokens=256,
    prefill_tile_rows=(32, 128),
):
    """See the module docstring; knobs are static (native_extend: None = where vectorised, True/False
    to force the native or the XLA extend path; the prefill_* knobs tune the latter).
    q [T, Hq, D] -> [T, Hq, D] (q.dtype)."""
    num_rows, num_q_heads, head_dim = q.shape
    num_kv_heads, page_size = k_pages.shape[1], k_pages.shape[3]
    unsupported = k_pages.dtype not in (jnp.float32, jnp.bfloat16)  # float16 pages: XLA path
    if unsupported or (num_q_heads // num_kv_heads) * page_size > MAX_GROUP_TIMES_PAGE or head_dim > MAX_HEAD_DIM:
        # Pages the kernels do not take run the XLA path whole (decided at trace time, never an error).
        return xla_ragged_paged_attention(
            q,
            k_pages,
            v_pages,
            layer,
            kv_lens,
            page_table,
            cu_q_lens,
            num_seqs,
            sm_scale=sm_scale,
            soft_cap=soft_cap,
            sliding_window=sliding_window,
            prefill_chunk_tokens=prefill_chunk_tokens,
            prefill_tile_rows=prefill_tile_rows,
        )
    scale = head_dim**-0.5 if sm_scale is None else sm_scale
    qf = q.astype(jnp.float32) * scale
    args = (qf, k_pages, v_pages, layer, kv_lens, page_table, cu_q_lens, num_seqs)
    decoded = native_decode_attention(
        *args, soft_cap=soft_cap, sliding_window=sliding_window, min_split_tokens=min_split_tokens
    )
    if native_extend is None:
        native_extend = native_extend_vectorized(page_size)
    if native_extend:
        extended = native_extend_attention(
            *args, soft_cap=soft_cap, sliding_window=sliding_window, bf16_products=q.dtype == jnp.bfloat16
        )
    else:
        extended = _xla_extend(
            *args,
            soft_cap=soft_cap,
            sliding_window=sliding_window,
            chunk_tokens=prefill_chunk_tokens,
            tile_rows=prefill_tile_rows,
        )
    return (decoded + extended).astype(q.dtype)


def _xla_extend(qf, k_pages, v_pages, layer, kv_lens, page_table, cu_q_lens, num_seqs, **options):
    seq_of, _, is_decode = classify_rows(cu_q_lens, kv_lens, num_seqs, qf.shape[0])

    def extend():
        return extend_rows(qf, k_pages, v_pages, layer, page_table, kv_lens, cu_q_lens, num_seqs, **options)

    # A decode-only step skips the XLA extend strategy entirely (its set-up alone cost ~60 us per layer).
    return jax.lax.cond(jnp.any((seq_of >= 0) & ~is_decode), extend, lambda: jnp.zeros_like(qf))
