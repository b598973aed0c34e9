"""Array layouts shared by the Pallas kernels (plain jnp, run around the kernels inside the same jit).

The Triton kernel gathers its query tile rows straight from [T, Hq, D]: row r of a KV head's tile is token
r // Gp, q head (within the group) r % Gp, where Gp is the group size G = Hq / Hkv rounded up to a power of
two (the padding rows are masked and never stored).
Pages become [L * Hkv * P, S, D] so one vector of flat page ids gathers a KV chunk.
Partial results of KV splits are merged with the usual log-sum-exp rule.
"""

from __future__ import annotations

import jax.numpy as jnp


def next_power_of_two(n):
    return 1 << max(0, (int(n) - 1).bit_length())


def flat_pages(pages):
    """[L, Hkv, P, S, D] -> [L * Hkv * P, S, D] (a free reshape)."""
    num_layers, num_kv_heads, num_pages, page_size, head_dim = pages.shape
    return pages.reshape(num_layers * num_kv_heads * num_pages, page_size, head_dim)


def pad_page_table(page_table, multiple):
    """Pad columns to a multiple of `multiple` with the sink page 0 (never visible: masked)."""
    return jnp.pad(page_table, ((0, 0), (0, -page_table.shape[1] % multiple)))


def merge_splits(acc, m, l):
    """acc [ns, ..., D], m/l [ns, ...] (float32, unnormalised) -> normalised [..., D]; 0 where empty."""
    m_max = jnp.max(m, axis=0)
    m_safe = jnp.where(jnp.isfinite(m_max), m_max, 0.0)
    weight = jnp.where(jnp.isfinite(m), jnp.exp(m - m_safe), 0.0)
    total = jnp.sum(weight * l, axis=0)
    out = jnp.sum(weight[..., None] * acc, axis=0)
    return out / jnp.where(total > 0, total, 1.0)[..., None]
