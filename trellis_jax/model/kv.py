"""KVPages: the device KV cache as pages, and allocation of an empty one.

Contract (docs/CONTRACTS.md, "KV pages"): `KVPages(k, v)` is a NamedTuple pytree, each array
[num_layers, num_kv_heads, num_pages, page_size, head_dim] in the model's dtype (`check_kv_pages`). Page 0 is the padding
sink: the allocator never hands it out; padded tokens write there. `copy_pages` copies whole pages (the
radix cache's partial-page reuse: a request starts its page as a copy of a sibling's). On CPU the zeroed
pages of `init_kv_pages` take host memory only as they are first written (pallas_kernels.fresh_zeros).
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from pallas_kernels.fresh_zeros import fresh_zeros
from pallas_kernels.ragged_paged_attention.copy_pages import copy_pages as copy_page_slices
from trellis_jax.model.checks import as_value_error


class KVPages(NamedTuple):
    k: jax.Array  # [L, Hkv, P, S, D]
    v: jax.Array  # [L, Hkv, P, S, D]

    @property
    def num_pages(self) -> int:
        return self.k.shape[2]

    @property
    def page_size(self) -> int:
        return self.k.shape[3]


def init_kv_pages(config, num_pages: int, page_size: int, dtype: str | None = None) -> KVPages:
    """Zeroed pages for `config` (dtype defaults to the model's). num_pages includes the sink page 0."""
    if num_pages < 2 or page_size < 1:
        raise ValueError(f"need num_pages >= 2 (page 0 is the sink) and page_size >= 1, got {num_pages}, {page_size}")
    shape = (config.num_layers, config.num_kv_heads, num_pages, page_size, config.head_dim)
    dtype = jnp.dtype(dtype or config.dtype)
    # Not jnp.zeros: on CPU that writes the whole pool (gigabytes) before the first step.
    return KVPages(fresh_zeros(shape, dtype), fresh_zeros(shape, dtype))


def check_kv_pages(kv, config) -> None:
    """ValueError unless kv is (k, v) of one shape and dtype, [L, Hkv, P, S, D] with the config's L, Hkv and D."""
    L, Hkv, D = config.num_layers, config.num_kv_heads, config.head_dim
    shapes = [tuple(x.shape) for x in kv]
    with as_value_error(f"KV pages must be [L={L}, Hkv={Hkv}, P, S, D={D}] for this config, got {shapes}"):
        chex.assert_equal(len(kv), 2)
        chex.assert_shape(list(kv), (L, Hkv, None, None, D))
        chex.assert_equal_shape(list(kv))
        chex.assert_trees_all_equal_dtypes(*kv)


def kv_pages_bytes(config, num_pages: int, page_size: int, dtype: str | None = None) -> int:
    """Device bytes `init_kv_pages` would allocate (K and V)."""
    return num_pages * page_size * config.kv_bytes_per_token(dtype)


def copy_pages(kv: KVPages, src: jax.Array, dst: jax.Array, count: jax.Array) -> KVPages:
    """kv with page dst[i] := page src[i] (every layer and head, K and V) for i < count; src and dst may be
    padded past count (pallas_kernels.ragged_paged_attention.copy_pages: in place when kv is donated)."""
    return KVPages(copy_page_slices(kv.k, src, dst, count), copy_page_slices(kv.v, src, dst, count))
