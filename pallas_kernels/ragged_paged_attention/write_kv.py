"""Write the new tokens' K/V into their pages: one scatter per array, in place when the pages are donated.

Contract (docs/CONTRACTS.md): k/v_pages [L, Hkv, P, S, D]; k_new/v_new [T, Hkv, D];
slot_mapping [T] int32 = page_id * page_size + offset_in_page; padded tokens map into page 0 (the sink,
so duplicate writes there are harmless). Slots outside [0, P*S) are dropped, never wrapped.
The new values are cast to the pages' dtype (bfloat16: rounded to nearest even).

On CPU, bfloat16 pages are written by a small native kernel (native/write_kv.cc) that updates the donated
pages in place: XLA:CPU widens a bfloat16 scatter to float32 over the whole operand, converting the entire
pool per layer (a batch-1 decode step of SmolLM2 took seconds instead of ~30 ms). Where that kernel does
not build, the XLA scatter runs (correct, slow).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.native.build import cpu_kernel_unavailable, load_target


def _check(pages, new, slot_mapping, name):
    if pages.ndim != 5:
        raise ValueError(f"write_kv: {name}_pages must be [L, Hkv, P, S, D], got shape {pages.shape}")
    _, num_kv_heads, _, _, head_dim = pages.shape
    if new.ndim != 3 or new.shape[1:] != (num_kv_heads, head_dim):
        raise ValueError(
            f"write_kv: {name}_new must be [T, {num_kv_heads}, {head_dim}] to match "
            f"{name}_pages {pages.shape}, got {new.shape}"
        )
    if slot_mapping.shape != (new.shape[0],) or not jnp.issubdtype(slot_mapping.dtype, jnp.integer):
        raise ValueError(
            f"write_kv: slot_mapping must be int [{new.shape[0]}], got {slot_mapping.dtype}{list(slot_mapping.shape)}"
        )


def _write_one(pages, layer, new, slot_mapping):
    if pages.dtype == jnp.bfloat16 and _native_bf16_writer():
        call = jax.ffi.ffi_call(
            _BF16_TARGET,
            jax.ShapeDtypeStruct(pages.shape, pages.dtype),
            input_output_aliases={0: 0},
            vmap_method="sequential",
        )
        return call(pages, jnp.asarray(layer, jnp.int32), new.astype(jnp.float32), slot_mapping.astype(jnp.int32))
    num_layers, num_kv_heads, num_pages, page_size, head_dim = pages.shape
    if new.shape[0] == 1:
        # XLA rewrites a one-row scatter into a dynamic-update-slice, which inside the model's layer scan
        # copied the whole pool per layer (runner measurement: 2.4 s vs 0.12 s per step); writing the
        # same row twice to the same slot keeps it a scatter with an order-independent result.
        new = jnp.concatenate([new, new])
        slot_mapping = jnp.concatenate([slot_mapping, slot_mapping])
    flat = pages.reshape(num_layers, num_kv_heads, num_pages * page_size, head_dim)
    # Index as [layer, :, slot] so XLA emits one scatter into the whole buffer (no per-layer copy).
    flat = flat.at[layer, :, slot_mapping].set(new.astype(pages.dtype), mode="drop")
    return flat.reshape(pages.shape)


_BF16_TARGET = "trellis_write_kv_bf16"


def _native_bf16_writer() -> bool:
    """Whether the in-place bfloat16 writer runs here (CPU, and it builds)."""
    return cpu_kernel_unavailable(lambda: load_target("write_kv.cc", "TrellisWriteKvBf16", _BF16_TARGET)) is None


def write_kv(k_pages, v_pages, layer, k_new, v_new, slot_mapping):
    """Returns (k_pages, v_pages) with k_new[t], v_new[t] stored at slot slot_mapping[t] of `layer`."""
    _check(k_pages, k_new, slot_mapping, "k")
    _check(v_pages, v_new, slot_mapping, "v")
    if k_pages.shape != v_pages.shape:
        raise ValueError(f"write_kv: k_pages {k_pages.shape} and v_pages {v_pages.shape} differ")
    return (_write_one(k_pages, layer, k_new, slot_mapping), _write_one(v_pages, layer, v_new, slot_mapping))
