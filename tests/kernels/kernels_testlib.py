"""Builders for ragged paged attention inputs, shared by the kernel tests (and usable by benchmarks).

`make_case` lays random K/V for each sequence into a shuffled set of pages, points padded page-table
entries and padding sequences at the sink page 0, and fills every page that no sequence owns (the sink
included) and every slot past a sequence's length with huge finite values: a kernel that reads K/V it
must not see produces wildly wrong output instead of passing by luck. `dense_attention` is an
independent per-row numpy oracle over the contiguous K/V kept beside the pages.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

# The default model's attention geometry (SmolLM2-135M: 3 kv heads, GQA 3, head_dim 64, page 16).
SMOLLM = dict(num_kv_heads=3, group=3, head_dim=64, page_size=16)
POISON_K = 3.0e2  # exp(q.k) of such a key would swamp every real one
POISON_V = 1.0e6


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    q_lens: tuple
    kv_lens: tuple
    page_size: int = 16
    num_kv_heads: int = 2
    group: int = 3
    head_dim: int = 64
    dtype: str = "float32"
    extra_seqs: int = 1  # padding sequences (b >= num_seqs)
    extra_rows: int = 2  # padding query rows
    extra_pages: int = 1  # page-table columns past the longest sequence
    soft_cap: float | None = None
    sliding_window: float | None = None
    num_layers: int = 2
    layer: int = 1

    def __str__(self):
        return self.name


def make_case(case: Case, seed: int = 0):
    """-> (args tuple in contract order, kwargs, contiguous per-sequence K/V for the oracle)."""
    rng = np.random.default_rng(seed)
    s, hkv, d = case.page_size, case.num_kv_heads, case.head_dim
    num_seqs = len(case.q_lens)
    pages_per_seq = [-(-n // s) for n in case.kv_lens]
    max_pages = max(pages_per_seq) + case.extra_pages
    num_pages = 1 + sum(pages_per_seq) + 3  # sink + owned + a few never-owned pages
    k_pages = np.full((case.num_layers, hkv, num_pages, s, d), POISON_K, np.float32)
    v_pages = np.full((case.num_layers, hkv, num_pages, s, d), POISON_V, np.float32)
    order = rng.permutation(num_pages - 1)[: sum(pages_per_seq)] + 1  # shuffled, never page 0
    page_table = np.zeros((num_seqs + case.extra_seqs, max_pages), np.int32)
    contiguous = []
    used = 0
    for b, kv_len in enumerate(case.kv_lens):
        ids = order[used : used + pages_per_seq[b]]
        used += pages_per_seq[b]
        page_table[b, : len(ids)] = ids
        k = rng.standard_normal((hkv, kv_len, d)).astype(np.float32)
        v = rng.standard_normal((hkv, kv_len, d)).astype(np.float32)
        for j in range(kv_len):
            k_pages[case.layer, :, ids[j // s], j % s] = k[:, j]
            v_pages[case.layer, :, ids[j // s], j % s] = v[:, j]
        contiguous.append((k, v))
    cu = np.zeros(num_seqs + case.extra_seqs + 1, np.int32)
    cu[1 : num_seqs + 1] = np.cumsum(case.q_lens)
    cu[num_seqs + 1 :] = cu[num_seqs]
    kv_lens = np.zeros(num_seqs + case.extra_seqs, np.int32)
    kv_lens[:num_seqs] = case.kv_lens
    q = rng.standard_normal((int(cu[-1]) + case.extra_rows, hkv * case.group, d)).astype(np.float32)
    dtype = jnp.dtype(case.dtype)
    args = (
        jnp.asarray(q, dtype),
        jnp.asarray(k_pages, dtype),
        jnp.asarray(v_pages, dtype),
        jnp.int32(case.layer),
        jnp.asarray(kv_lens),
        jnp.asarray(page_table),
        jnp.asarray(cu),
        jnp.int32(num_seqs),
    )
    kwargs = dict(soft_cap=case.soft_cap, sliding_window=case.sliding_window)
    return args, kwargs, contiguous


def dense_attention(case: Case, args, contiguous):
    """Per-row numpy oracle (float64) on the dtype-rounded inputs.  -> [T, Hq, D] float64."""
    q = np.asarray(jnp.asarray(args[0], jnp.float32), np.float64)
    out = np.zeros_like(q)
    cu = np.asarray(args[6])
    scale = case.head_dim**-0.5
    for b, (k, v) in enumerate(contiguous):
        k = np.asarray(jnp.asarray(jnp.asarray(k, case.dtype), jnp.float32), np.float64)
        v = np.asarray(jnp.asarray(jnp.asarray(v, case.dtype), jnp.float32), np.float64)
        q_len = cu[b + 1] - cu[b]
        for i in range(q_len):
            pos = case.kv_lens[b] - q_len + i
            lo = 0 if case.sliding_window is None else max(0, pos - case.sliding_window + 1)
            for h in range(q.shape[1]):
                kh = h // case.group
                logits = k[kh, lo : pos + 1] @ q[cu[b] + i, h] * scale
                if case.soft_cap is not None:
                    logits = case.soft_cap * np.tanh(logits / case.soft_cap)
                p = np.exp(logits - logits.max())
                out[cu[b] + i, h] = p @ v[kh, lo : pos + 1] / p.sum()
    return out


def tolerance(dtype):
    """Relative tolerance by dtype: f32 1e-5, bf16 1e-2 (scaled by the output's magnitude)."""
    return 1e-5 if jnp.dtype(dtype) == jnp.float32 else 1e-2


def assert_close(actual, expected, dtype):
    actual = np.asarray(jnp.asarray(actual, jnp.float32), np.float64)
    assert not np.isnan(actual).any(), "output has NaN rows (an unwritten or poisoned element)"
    tol = tolerance(dtype) * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=tolerance(dtype), atol=tol)


def run_against_oracle(case: Case, implementation: str, **knobs):
    """Jitted `ragged_paged_attention` with `implementation` and tuning knobs on `case`
    -> (its output, the dense oracle's)."""
    import jax

    from pallas_kernels.ragged_paged_attention import ragged_paged_attention

    args, kwargs, contiguous = make_case(case)
    out = jax.jit(lambda *a: ragged_paged_attention(*a, implementation=implementation, **kwargs, **knobs))(*args)
    return out, dense_attention(case, args, contiguous)
