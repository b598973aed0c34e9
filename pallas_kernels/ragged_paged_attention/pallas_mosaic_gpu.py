"""Pallas kernel through Mosaic GPU (`plgpu.kernel`, Hopper: TMA copies + WGMMA), bfloat16/float16 only.

Same contract and semantics as `reference.py`; same work items and layouts as the Triton kernel
(`schedule.py`, `layout.py`). One warpgroup per (work item, kv head, kv split) program:
  * the item's query tile [64 rows = block_rows * Gp, D] is copied to shared memory once (TMA);
  * KV chunks of `chunk_tokens` tokens are assembled in shared memory by one TMA copy per page
    (`chunk_tokens / page_size` copies sharing one barrier), double-buffered: chunk c+2 is requested as
    soon as chunk c has been consumed, so copies overlap the two WGMMAs and the online softmax;
  * each program stores its normalised tile plus the row max / sum to its own output slot; rows are
    gathered back and KV splits merged outside (TMA stores cannot be masked per row).
Masks use only multiplies and compares on iotas: row r of the tile is token r // Gp, so
"key k visible from row r" is (k - pos_start) * Gp <= r, with r < rows * Gp for the valid rows.
Requires page_size >= 8 (TMA row tiling) and head_dim a multiple of 64.

Status (H200, JAX 0.11.2, docs/benchmarks/gpu.md): compiles and matches the reference when every program reads at
most two KV chunks, but is wrong once a slot of the double buffer is refilled (3+ chunks), while the
Pallas GPU interpreter runs the same kernel correctly. Until that is fixed on a GPU it only runs when
called with `experimental=True`; the api never picks it by default.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels.ragged_paged_attention import layout
from pallas_kernels.ragged_paged_attention.schedule import build_work_items, row_items

try:
    import jax.experimental.pallas.mosaic_gpu as plgpu
except ImportError:  # pragma: no cover - JAX builds without Mosaic GPU
    plgpu = None

_TILE_ROWS = 64  # WGMMA M
_SLOTS = 2
_LOG2E = math.log2(math.e)


def check_available(platform_kind):
    """None when this backend can run here, else the reason."""
    if plgpu is None:
        return "jax.experimental.pallas.mosaic_gpu is missing from this JAX build"
    if platform_kind != "hopper":
        return "Mosaic GPU kernels need an NVIDIA Hopper GPU (compute capability 9.x)"
    return None


def _check_shapes(q, k_pages, chunk_tokens):
    page_size, head_dim = k_pages.shape[3], k_pages.shape[4]
    problems = []
    if q.dtype not in (jnp.bfloat16, jnp.float16) or k_pages.dtype != q.dtype:
        problems.append(f"needs bfloat16/float16 q and pages of one dtype, got {q.dtype}/{k_pages.dtype}")
    if page_size < 8 or chunk_tokens % page_size:
        problems.append(f"needs page_size >= 8 dividing chunk_tokens={chunk_tokens}, got {page_size}")
    if head_dim % 64:
        problems.append(f"needs head_dim % 64 == 0, got {head_dim}")
    if problems:
        raise NotImplementedError("pallas_mosaic: " + "; ".join(problems))


def _softmax_step(s, m, l, acc, visible):
    """Online softmax on a [64, n] logits tile in the WGMMA layout; returns (p, m, l, acc) rescaled."""
    s = jnp.where(visible, s, -jnp.inf)
    m_new = jnp.maximum(m, s.max(axis=1))
    m_safe = jnp.where(m_new == -jnp.inf, 0.0, m_new)
    alpha = jnp.exp2((m - m_safe) * _LOG2E)
    p = jnp.exp2((s - lax.broadcast_in_dim(m_safe, s.shape, [0])) * _LOG2E)
    l = l * alpha + p.sum(axis=1)
    acc = acc * lax.broadcast_in_dim(alpha, acc.shape, [0])
    return p, m_new, l, acc


def _kernel(
    layer_ref,
    seq_ref,
    row_start_ref,
    rows_ref,
    pos_start_ref,
    table_ref,
    q_ref,
    k_ref,
    v_ref,
    o_ref,
    m_ref,
    l_ref,
    q_smem,
    k_smem,
    v_smem,
    m_smem,
    l_smem,
    q_bar,
    k_bars,
    v_bars,
    *p_smem,
    padded_group,
    chunk_pages,
    num_kv_heads,
    num_pages,
    sm_scale,
    soft_cap,
    sliding_window,
    num_splits,
    interpreted,
):
    item, head, split = lax.axis_index("item"), lax.axis_index("head"), lax.axis_index("split")
    # The GPU interpreter has no layouts (and no rule for layout_cast): cast only when compiling.
    cast = (lambda x, _: x) if interpreted else plgpu.layout_cast
    seq, row_start, rows, pos_start = seq_ref[item], row_start_ref[item], rows_ref[item], pos_start_ref[item]
    page_size, head_dim = k_ref.shape[1], k_ref.shape[2]
    chunk = chunk_pages * page_size
    dtype = q_smem.dtype

    div = lambda a, b: lax.div(a, jnp.int32(b))  # operands are >= 0: truncation == floor
    first = jnp.int32(0) if sliding_window is None else div(jnp.maximum(pos_start - sliding_window + 1, 0), chunk)
    end = jnp.where(rows > 0, div(jnp.maximum(pos_start + rows - 1, 0), chunk) + 1, first)
    per_split = div(end - first + num_splits - 1, num_splits)
    lo = first + split * per_split
    hi = jnp.minimum(lo + per_split, end)
    page_base = (layer_ref[0] * num_kv_heads + head) * num_pages

    def request(c, slot):
        for j in range(chunk_pages):  # one TMA per page, all on the slot's barrier
            page = page_base + table_ref[seq, c * chunk_pages + j]
            rows_j = pl.ds(j * page_size, page_size)
            plgpu.copy_gmem_to_smem(k_ref.at[page], k_smem.at[slot, rows_j], k_bars.at[slot])
            plgpu.copy_gmem_to_smem(v_ref.at[page], v_smem.at[slot, rows_j], v_bars.at[slot])

    plgpu.copy_gmem_to_smem(q_ref.at[head, pl.ds(row_start * padded_group, _TILE_ROWS)], q_smem, q_bar.at[0])
    for slot in range(_SLOTS):
        pl.when(lo + slot < hi)(functools.partial(request, lo + slot, slot))
    plgpu.barrier_wait(q_bar.at[0])

    def body(c, carry):
        acc, m, l = carry
        slot = lax.rem(c - lo, jnp.int32(_SLOTS))
        plgpu.barrier_wait(k_bars.at[slot])

        def qk(acc_ref):
            plgpu.wgmma(acc_ref, q_smem, plgpu.transpose_ref(k_smem.at[slot], (1, 0)))
            return acc_ref[...]

        s = pl.run_scoped(qk, plgpu.ACC((_TILE_ROWS, chunk), jnp.float32)) * sm_scale
        if soft_cap is not None:
            s = soft_cap * jnp.tanh(s / soft_cap)
        r = cast(lax.broadcasted_iota(jnp.int32, s.shape, 0), plgpu.Layout.WGMMA)
        n = cast(lax.broadcasted_iota(jnp.int32, s.shape, 1), plgpu.Layout.WGMMA)
        ahead = c * chunk + n - pos_start  # key position relative to the tile's first row
        visible = (ahead * padded_group <= r) & (r < rows * padded_group)
        if sliding_window is not None:
            visible &= r < (ahead + sliding_window) * padded_group
        p, m, l, acc = _softmax_step(s, m, l, acc, visible)
        plgpu.barrier_wait(v_bars.at[slot])

        def pv(acc_ref):
            if p_smem:  # the GPU interpreter takes WGMMA operands from shared memory only
                p_smem[0][...] = p.astype(dtype)
                plgpu.commit_smem()
                plgpu.wgmma(acc_ref, p_smem[0], v_smem.at[slot])
            else:
                plgpu.wgmma(acc_ref, p.astype(dtype), v_smem.at[slot])
            return acc_ref[...]

        acc = acc + pl.run_scoped(pv, plgpu.ACC((_TILE_ROWS, head_dim), jnp.float32))
        pl.when(c + _SLOTS < hi)(functools.partial(request, c + _SLOTS, slot))
        return acc, m, l

    init = (
        cast(jnp.zeros((_TILE_ROWS, head_dim), jnp.float32), plgpu.Layout.WGMMA),
        cast(jnp.full((_TILE_ROWS,), -jnp.inf, jnp.float32), plgpu.Layout.WGMMA.reduce(1)),
        cast(jnp.zeros((_TILE_ROWS,), jnp.float32), plgpu.Layout.WGMMA.reduce(1)),
    )
    acc, m, l = lax.fori_loop(lo, hi, body, init)
    l_safe = jnp.where(l == 0.0, 1.0, l)
    q_smem[...] = (acc / lax.broadcast_in_dim(l_safe, acc.shape, [0])).astype(dtype)
    m_smem[...] = m
    l_smem[...] = l
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(q_smem, o_ref.at[item, split, head])
    plgpu.copy_smem_to_gmem(m_smem, m_ref.at[item, split, head])
    plgpu.copy_smem_to_gmem(l_smem, l_ref.at[item, split, head])
    plgpu.wait_smem_to_gmem(0)


def _compiler_params(lowering_semantics):
    """ "lane" (the kernel is written in the WGMMA-layout style), "warpgroup", or None (JAX's default)."""
    if lowering_semantics is None:
        return plgpu.CompilerParams(approx_math=True)
    semantics = {"lane": plgpu.LoweringSemantics.Lane, "warpgroup": plgpu.LoweringSemantics.Warpgroup}
    return plgpu.CompilerParams(approx_math=True, lowering_semantics=semantics[lowering_semantics])


def _smem_tile(shape, dtype):
    swizzle = 128
    tiling = plgpu.TilingTransform((8, swizzle // jnp.dtype(dtype).itemsize))
    return plgpu.SMEM(shape, dtype, transforms=(tiling, plgpu.SwizzleTransform(swizzle)))


def mosaic_ragged_paged_attention(
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
    chunk_tokens=64,
    num_kv_splits=None,
    lowering_semantics="lane",
    experimental=False,
    interpret=None,
):
    """See the module docstring; keyword arguments are static.  q [T, Hq, D] -> [T, Hq, D]."""
    if not experimental:
        raise NotImplementedError(
            "pallas_mosaic is wrong on H200 once a KV slot is refilled (see the module docstring); "
            "pass experimental=True to run it anyway, or use implementation='pallas_triton'"
        )
    _check_shapes(q, k_pages, chunk_tokens)
    num_rows, num_q_heads, head_dim = q.shape
    _, num_kv_heads, num_pages, page_size, _ = k_pages.shape
    padded_group = layout.next_power_of_two(num_q_heads // num_kv_heads)
    if padded_group > _TILE_ROWS:
        raise NotImplementedError(f"pallas_mosaic: q heads per kv head must be <= 64, got {padded_group}")
    block_rows = _TILE_ROWS // padded_group
    chunk_pages = chunk_tokens // page_size
    num_splits = num_kv_splits or (4 if num_rows <= page_table.shape[0] else 1)
    items = build_work_items(cu_q_lens, kv_lens, num_seqs, num_rows=num_rows, block_rows=block_rows)
    num_items = items.seq.shape[0]
    # TMA into a tiled tile needs the grouped row count to be a multiple of the tile (64 rows).
    extra_rows = block_rows + (-num_rows % block_rows)
    qg = layout.group_rows(q, num_kv_heads, padded_group, extra_rows=extra_rows)
    table = layout.pad_page_table(page_table, chunk_pages)
    tile = (num_items, num_splits, num_kv_heads, _TILE_ROWS)
    kernel = functools.partial(
        _kernel,
        padded_group=padded_group,
        chunk_pages=chunk_pages,
        num_kv_heads=num_kv_heads,
        num_pages=num_pages,
        sm_scale=head_dim**-0.5 if sm_scale is None else sm_scale,
        soft_cap=soft_cap,
        sliding_window=sliding_window,
        num_splits=num_splits,
        interpreted=interpret is not None,
    )
    run = plgpu.kernel(
        kernel,
        out_type=(
            jax.ShapeDtypeStruct(tile + (head_dim,), q.dtype),
            jax.ShapeDtypeStruct(tile, jnp.float32),
            jax.ShapeDtypeStruct(tile, jnp.float32),
        ),
        scratch_types=(
            _smem_tile((_TILE_ROWS, head_dim), q.dtype),
            _smem_tile((_SLOTS, chunk_tokens, head_dim), q.dtype),
            _smem_tile((_SLOTS, chunk_tokens, head_dim), q.dtype),
            plgpu.SMEM((_TILE_ROWS,), jnp.float32),
            plgpu.SMEM((_TILE_ROWS,), jnp.float32),
            plgpu.Barrier(num_barriers=1),
            plgpu.Barrier(num_arrivals=chunk_pages, num_barriers=_SLOTS),
            plgpu.Barrier(num_arrivals=chunk_pages, num_barriers=_SLOTS),
        )
        + ((_smem_tile((_TILE_ROWS, chunk_tokens), q.dtype),) if interpret is not None else ()),
        grid=(num_items, num_kv_heads, num_splits),
        grid_names=("item", "head", "split"),
        compiler_params=_compiler_params(lowering_semantics),
        interpret=interpret,
    )
    out, m, l = run(
        jnp.reshape(layer, (1,)).astype(jnp.int32),
        *items,
        table,
        qg,
        layout.flat_pages(k_pages),
        layout.flat_pages(v_pages),
    )
    return _gather_rows(out, m, l, cu_q_lens, num_seqs, num_rows, num_q_heads, padded_group, block_rows, q.dtype)


def _gather_rows(out, m, l, cu_q_lens, num_seqs, num_rows, num_q_heads, padded_group, block_rows, dtype):
    """Per-item tiles out [N, ns, Hkv, 64, D], m/l [N, ns, Hkv, 64] -> rows [T, Hq, D] (splits merged)."""
    group = num_q_heads // out.shape[2]
    item, offset = row_items(cu_q_lens, num_seqs, num_rows=num_rows, block_rows=block_rows)
    tile_row = offset[:, None] * padded_group + jnp.arange(group)[None, :]  # [T, G]
    pick = lambda x: jnp.moveaxis(x[item[:, None], :, :, tile_row], 2, 0)  # -> [ns, T, G, Hkv, ...]
    m_rows, l_rows = pick(m), pick(l)
    acc = pick(out).astype(jnp.float32) * l_rows[..., None]  # tiles are normalised: undo for the merge
    merged = jnp.swapaxes(layout.merge_splits(acc, m_rows, l_rows), 1, 2)  # [T, Hkv, G, D]
    valid = jnp.arange(num_rows) < cu_q_lens[num_seqs]
    return jnp.where(valid[:, None, None, None], merged, 0).reshape(num_rows, num_q_heads, -1).astype(dtype)
