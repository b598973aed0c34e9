"""CPU backend "cpu_native": decode rows through a C++ FFI kernel, prefill/extend rows through the XLA path.

Same contract and semantics as `reference.py`. Rows whose sequence has exactly one new token go to
`pallas_kernels/native/paged_decode_attention.cc` (streams each sequence's pages once at memory speed and
uses XLA's intra-op thread pool); every other row runs `xla_cpu`'s blocked prefill strategy, which is
matmul-bound and already fast on XLA. The two write disjoint rows and are summed.

Available when the kernel builds here (a C++ compiler and jaxlib's FFI headers, which ship with jaxlib);
otherwise `check_available` gives the reason and the platform default falls back to "xla".
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.native.build import NativeUnavailable, load_target
from pallas_kernels.ragged_paged_attention.xla_cpu import classify_rows, extend_rows, xla_ragged_paged_attention

TARGET = "trellis_paged_decode_attention"
# The kernel keeps one page of scores per query head on the stack ([G, S] <= 1024) and rows of <= 256.
MAX_GROUP_TIMES_PAGE, MAX_HEAD_DIM = 1024, 256
_SOURCE, _SYMBOL = "paged_decode_attention.cc", "TrellisPagedDecodeAttention"


def check_available(platform_kind):
    """None when the native kernel can run here, else the reason."""
    if platform_kind != "cpu":
        return "the native kernel is a CPU custom call"
    try:
        load_target(_SOURCE, _SYMBOL, TARGET)
    except NativeUnavailable as error:
        return str(error)
    return None


def native_decode_attention(q, k_pages, v_pages, layer, kv_lens, page_table, cu_q_lens, num_seqs, *,
                            soft_cap=None, sliding_window=None, min_split_tokens=256):
    """q [T, Hq, D] float32 (already scaled) -> [T, Hq, D] float32; rows that are not decode rows are 0."""
    load_target(_SOURCE, _SYMBOL, TARGET)
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(q.shape, jnp.float32), vmap_method="sequential")
    return call(q, k_pages, v_pages, layer, kv_lens, page_table, cu_q_lens, num_seqs,
                soft_cap=np.float32(soft_cap or 0.0), sliding_window=np.int64(sliding_window or 0),
                min_split_tokens=np.int64(min_split_tokens))


def native_ragged_paged_attention(q, k_pages, v_pages, layer, kv_lens, page_table, cu_q_lens, num_seqs, *,
                                  sm_scale=None, soft_cap=None, sliding_window=None, min_split_tokens=256,
                                  prefill_chunk_tokens=256, prefill_tile_rows=(32, 128)):
    """See the module docstring; knobs are static.  q [T, Hq, D] -> [T, Hq, D] (q.dtype)."""
    num_rows, num_q_heads, head_dim = q.shape
    num_kv_heads, page_size = k_pages.shape[1], k_pages.shape[3]
    unsupported = k_pages.dtype not in (jnp.float32, jnp.bfloat16)  # float16 pages: XLA path
    if unsupported or (num_q_heads // num_kv_heads) * page_size > MAX_GROUP_TIMES_PAGE or head_dim > MAX_HEAD_DIM:
        # Pages the kernel does not take run the XLA path whole (decided at trace time, never an error).
        return xla_ragged_paged_attention(q, k_pages, v_pages, layer, kv_lens, page_table, cu_q_lens, num_seqs,
                                          sm_scale=sm_scale, soft_cap=soft_cap, sliding_window=sliding_window,
                                          prefill_chunk_tokens=prefill_chunk_tokens,
                                          prefill_tile_rows=prefill_tile_rows)
    scale = head_dim ** -0.5 if sm_scale is None else sm_scale
    qf = q.astype(jnp.float32) * scale
    decoded = native_decode_attention(qf, k_pages, v_pages, layer, kv_lens, page_table, cu_q_lens, num_seqs,
                                      soft_cap=soft_cap, sliding_window=sliding_window,
                                      min_split_tokens=min_split_tokens)
    seq_of, q_pos, is_decode = classify_rows(cu_q_lens, kv_lens, num_seqs, num_rows)

    def extend():
        return extend_rows(qf, k_pages, v_pages, layer, page_table, kv_lens, cu_q_lens, num_seqs,
                           soft_cap=soft_cap, sliding_window=sliding_window, chunk_tokens=prefill_chunk_tokens,
                           tile_rows=prefill_tile_rows)

    # A decode-only step skips the prefill strategy entirely (its set-up alone cost ~60 us per layer).
    has_extend_rows = jnp.any((seq_of >= 0) & ~is_decode)
    extended = jax.lax.cond(has_extend_rows, extend, lambda: jnp.zeros_like(qf))
    return (decoded + extended).astype(q.dtype)
