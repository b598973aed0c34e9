"""Pallas kernel through the Triton lowering (`pl.pallas_call`): any NVIDIA GPU, and interpret mode on CPU.

Same contract and semantics as `reference.py`. Grid = (work item, kv head, kv split); a work item is a
block of `block_rows` query rows of one sequence (`schedule.py`), so prefill chunks, cached-prefix
extends and decodes share one launch. A program holds its rows' queries of one kv head as an
[M = block_rows * Gp, D] tile, loops over the KV chunks its rows can see (causal / window chunks are
skipped, not masked), gathers each chunk's pages with one vector of page ids, and runs online softmax.
With `num_kv_splits > 1` (decode-shaped calls) the visible chunks are cut into splits whose partial
results are merged outside the kernel (flash-decoding), so short batches still fill the GPU.

The Triton lowering is deprecated upstream in JAX 0.11 but still runs there; it stays behind the api.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels.ragged_paged_attention import layout
from pallas_kernels.ragged_paged_attention.schedule import build_work_items

try:  # the Triton-specific load/store (masks); absent in JAX builds without Pallas GPU support
    from jax.experimental.pallas import triton as plgpu
except ImportError:  # pragma: no cover - exercised only on exotic builds
    plgpu = None

_LOG2E = math.log2(math.e)


def check_available(platform_kind):
    """None when the compiled kernel can run here, else the reason."""
    if plgpu is None:
        return "jax.experimental.pallas.triton is missing from this JAX build"
    if platform_kind == "cpu":
        return "the Triton lowering needs an NVIDIA GPU; use implementation='pallas_interpret' on CPU"
    return None


def check_interpret_available(platform_kind):
    """Interpret mode runs anywhere the Triton primitives import."""
    del platform_kind
    return None if plgpu is not None else "jax.experimental.pallas.triton is missing from this JAX build"


def _kernel(
    layer_ref,
    seq_ref,
    row_start_ref,
    rows_ref,
    pos_start_ref,
    page_table_ref,
    q_ref,
    k_ref,
    v_ref,
    *refs,
    group,
    padded_group,
    block_rows,
    chunk_pages,
    num_kv_heads,
    num_pages,
    sm_scale,
    soft_cap,
    sliding_window,
    num_splits,
):
    o_ref, *ml_refs = refs[1:] if num_splits == 1 else refs  # (aliased zeros input, out) when unsplit
    item, head, split = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    seq, row_start, rows = seq_ref[item], row_start_ref[item], rows_ref[item]
    pos_start = pos_start_ref[item]
    num_rows = q_ref.shape[0]  # out refs have num_rows + tile rows (spares for masked lanes)
    page_size, head_dim = k_ref.shape[1], k_ref.shape[2]
    chunk_tokens = chunk_pages * page_size
    tile_rows = block_rows * padded_group
    exact = False if q_ref.dtype == jnp.float32 else None  # f32 inputs: no TF32 rounding in the dots

    # Tile row r = token row_start + r // Gp, q head head * G + r % Gp (rows past G are padding).
    r = jnp.arange(tile_rows, dtype=jnp.int32)
    row_valid = ((r // padded_group) < rows) & ((r % padded_group) < group)
    token = jnp.minimum(row_start + r // padded_group, num_rows - 1)
    q_head = head * group + jnp.minimum(r % padded_group, group - 1)
    q_pos = jnp.where(row_valid, pos_start + r // padded_group, -1)
    first = 0 if sliding_window is None else jnp.maximum(pos_start - sliding_window + 1, 0) // chunk_tokens
    end = jnp.where(rows > 0, (pos_start + rows - 1) // chunk_tokens + 1, first)
    per_split = pl.cdiv(end - first, num_splits)
    lo = first + split * per_split
    hi = jnp.minimum(lo + per_split, end)

    # Index with full [M, D] arrays (no slices): the form both the Triton lowering and interpret mode take.
    tok2, head2 = (jnp.broadcast_to(x[:, None], (tile_rows, head_dim)) for x in (token, q_head))
    dim2 = jnp.broadcast_to(jnp.arange(head_dim, dtype=jnp.int32)[None, :], (tile_rows, head_dim))
    q = q_ref[tok2, head2, dim2]  # [M, D], gathered straight from the [T, Hq, D] layout
    page_base = (layer_ref[0] * num_kv_heads + head) * num_pages

    def body(c, carry):
        acc, m, l = carry
        ids = page_base + page_table_ref[seq, pl.ds(c * chunk_pages, chunk_pages)]
        k = k_ref[ids].reshape(chunk_tokens, head_dim)
        v = v_ref[ids].reshape(chunk_tokens, head_dim)
        logits = plgpu.dot(q, k, trans_b=True, allow_tf32=exact).astype(jnp.float32) * sm_scale  # [M, n]
        if soft_cap is not None:
            logits = soft_cap * jnp.tanh(logits / soft_cap)
        k_pos = c * chunk_tokens + jnp.arange(chunk_tokens, dtype=jnp.int32)
        visible = k_pos[None, :] <= q_pos[:, None]
        if sliding_window is not None:
            visible &= q_pos[:, None] - k_pos[None, :] < sliding_window
        logits = jnp.where(visible, logits, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(logits, axis=1))
        m_safe = jnp.where(m_new == -jnp.inf, 0.0, m_new)
        alpha = jnp.exp2((m - m_safe) * _LOG2E)
        p = jnp.exp2((logits - m_safe[:, None]) * _LOG2E)
        l = l * alpha + jnp.sum(p, axis=1)
        pv = plgpu.dot(p.astype(v.dtype), v, allow_tf32=exact).astype(jnp.float32)
        return acc * alpha[:, None] + pv, m_new, l

    init = (
        jnp.zeros((tile_rows, head_dim), jnp.float32),
        jnp.full((tile_rows,), -jnp.inf, jnp.float32),
        jnp.zeros((tile_rows,), jnp.float32),
    )
    acc, m, l = jax.lax.fori_loop(lo, hi, body, init)
    tile_mask = jnp.broadcast_to(row_valid[:, None], acc.shape)
    # Masked-off rows go to distinct spare rows past T (out has T + M rows): no two lanes of a tile
    # share an address, which interpret mode (a scatter) needs; on the GPU the mask alone suffices.
    spare_token = jnp.where(row_valid, token, num_rows + r)
    spare_head = jnp.where(row_valid, q_head, 0)
    tok2 = jnp.where(tile_mask, tok2, num_rows + r[:, None])
    head2 = jnp.where(tile_mask, head2, 0)
    if num_splits == 1:
        out = acc / jnp.where(l > 0, l, 1.0)[:, None]
        plgpu.store(o_ref.at[tok2, head2, dim2], out.astype(o_ref.dtype), mask=tile_mask)
    else:
        m_ref, l_ref = ml_refs
        plgpu.store(o_ref.at[split, tok2, head2, dim2], acc, mask=tile_mask)
        plgpu.store(m_ref.at[split, spare_token, spare_head], m, mask=row_valid)
        plgpu.store(l_ref.at[split, spare_token, spare_head], l, mask=row_valid)


def triton_ragged_paged_attention(
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
    block_rows=None,
    chunk_tokens=None,
    num_kv_splits=None,
    num_warps=None,
    num_stages=3,
    interpret=False,
):
    """See the module docstring; all keyword arguments are static.  q [T, Hq, D] -> [T, Hq, D]."""
    num_rows, num_q_heads, head_dim = q.shape
    _, num_kv_heads, num_pages, page_size, _ = k_pages.shape
    group = num_q_heads // num_kv_heads
    padded_group = layout.next_power_of_two(group)
    decode_like = num_rows <= page_table.shape[0]
    tile_rows = 16 if decode_like else 128
    block_rows = max(block_rows or tile_rows // padded_group, -(-16 // padded_group))  # dots need M >= 16
    # Measured on H200 (docs/benchmarks/gpu.md): 128-token chunks win for prefill at head_dim 128, 64 elsewhere.
    chunk_tokens = chunk_tokens or (128 if head_dim >= 128 and not decode_like else 64)
    chunk_pages = max(1, chunk_tokens // page_size)
    num_splits = num_kv_splits or (4 if decode_like else 1)
    num_warps = num_warps or (4 if block_rows * padded_group <= 64 else 8)
    items = build_work_items(cu_q_lens, kv_lens, num_seqs, num_rows=num_rows, block_rows=block_rows)
    kernel = functools.partial(
        _kernel,
        group=group,
        padded_group=padded_group,
        block_rows=block_rows,
        chunk_pages=chunk_pages,
        num_kv_heads=num_kv_heads,
        num_pages=num_pages,
        sm_scale=head_dim**-0.5 if sm_scale is None else sm_scale,
        soft_cap=soft_cap,
        sliding_window=sliding_window,
        num_splits=num_splits,
    )
    table = layout.pad_page_table(page_table, chunk_pages)
    inputs = [
        jnp.reshape(layer, (1,)).astype(jnp.int32),
        *items,
        table,
        q,
        layout.flat_pages(k_pages),
        layout.flat_pages(v_pages),
    ]
    spare_rows = num_rows + block_rows * padded_group
    if num_splits == 1:  # written in place into zeros, so padding rows come out as 0
        out_shape, aliases = [jax.ShapeDtypeStruct((spare_rows,) + q.shape[1:], q.dtype)], {len(inputs): 0}
        inputs.append(jnp.zeros((spare_rows,) + q.shape[1:], q.dtype))
    else:
        split_shape = (num_splits, spare_rows, num_q_heads)
        stats = jax.ShapeDtypeStruct(split_shape, jnp.float32)  # running max, running sum
        out_shape = [jax.ShapeDtypeStruct(split_shape + (head_dim,), jnp.float32), stats, stats]
        aliases = {}
    params = None if interpret else plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages)
    grid = (items.seq.shape[0], num_kv_heads, num_splits)
    outs = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=grid,
        input_output_aliases=aliases,
        interpret=interpret,
        compiler_params=params,
        name="ragged_paged_attention_triton",
    )(*inputs)
    if num_splits == 1:
        return outs[0][:num_rows]
    out = layout.merge_splits(*(x[:, :num_rows] for x in outs))
    valid = jnp.arange(num_rows) < cu_q_lens[num_seqs]  # padding rows are never stored: zero them
    return jnp.where(valid[:, None, None], out, 0).astype(q.dtype)


interpret_ragged_paged_attention = functools.partial(triton_ragged_paged_attention, interpret=True)
