"""Benchmark ragged paged attention against ceilings measured on the same device in the same run.

Prints, per implementation: decode achieved KV-read bandwidth vs the device's measured copy/read
bandwidth, and prefill/extend useful FLOP rate (causal work only) vs its measured matmul rate; on CPU
also a dense (non-paged, contiguous K/V) jnp attention of the same shape, the issue's CPU yardstick.
Imports only jax, numpy and pallas_kernels (runs on the bare GPU image).

  PYTHONPATH=. python3 tools/bench_attention.py                       # CPU defaults (SmolLM2 shapes)
  PYTHONPATH=. python3 tools/bench_attention.py --impls pallas_triton,xla --dtype bfloat16 \
      --kv-heads 8 --q-heads 32 --head-dim 128 --batch 32 --context 2048 \
      --prefill-seqs 4 --prefill-new 2048 --prefill-prefix 2048
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.ragged_paged_attention import ragged_paged_attention


def timed(fn, *args, min_time=0.5, max_iters=200):
    """Best per-call seconds over a few batches of back-to-back calls (after a warm-up/compile call)."""
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    single = max(time.perf_counter() - start, 1e-6)
    iters = int(min(max_iters, max(1, min_time / 3 / single)))
    best = single
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(iters):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / iters)
    return best


def measure_ceilings(dtype, on_gpu):
    """Device copy bandwidth (read+write bytes/s), read-only bandwidth, and matmul FLOP/s."""
    n_bytes = (1 << 30) if on_gpu else (256 << 20)
    x = jnp.ones((n_bytes // 4,), jnp.float32)
    copy_s = timed(jax.jit(lambda a: a * 1.0001), x)
    read_s = timed(jax.jit(lambda a: jnp.sum(a)), x)
    n = 8192 if on_gpu else 1024
    a = jnp.ones((n, n), dtype)
    matmul_s = timed(jax.jit(lambda p, q: jnp.dot(p, q, preferred_element_type=jnp.float32)), a, a)
    return {
        "copy_GBps": 2 * n_bytes / copy_s / 1e9,
        "read_GBps": n_bytes / read_s / 1e9,
        "matmul_GFLOPs": 2 * n**3 / matmul_s / 1e9,
    }


def paged_inputs(q_lens, kv_lens, *, kv_heads, q_heads, head_dim, page_size, dtype, seed=0):
    """Random ragged inputs with a shuffled page table (one layer)."""
    rng = np.random.default_rng(seed)
    pages_per_seq = [-(-n // page_size) for n in kv_lens]
    max_pages = max(pages_per_seq)
    num_pages = 1 + sum(pages_per_seq)
    shape = (1, kv_heads, num_pages, page_size, head_dim)
    k = jnp.asarray(rng.standard_normal(shape, np.float32), dtype)
    v = jnp.asarray(rng.standard_normal(shape, np.float32), dtype)
    order = rng.permutation(num_pages - 1) + 1
    table = np.zeros((len(q_lens), max_pages), np.int32)
    used = 0
    for b, n in enumerate(pages_per_seq):
        table[b, :n] = order[used : used + n]
        used += n
    cu = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
    q = jnp.asarray(rng.standard_normal((int(cu[-1]), q_heads, head_dim), np.float32), dtype)
    return (
        q,
        k,
        v,
        jnp.int32(0),
        jnp.asarray(kv_lens, jnp.int32),
        jnp.asarray(table),
        jnp.asarray(cu),
        jnp.int32(len(q_lens)),
    )


def causal_pairs(q_lens, kv_lens):
    """Number of (query, visible key) pairs: the useful work of causal attention with prefix offsets."""
    return sum(q * (k - q) + q * (q + 1) // 2 for q, k in zip(q_lens, kv_lens))


def dense_attention(q, k, v, prefix):
    """Non-paged yardstick: q [B, Tq, Hq, D], k/v [B, Hkv, N, D] contiguous; causal with a prefix offset."""
    b, tq, hq, d = q.shape
    hkv, n = k.shape[1], k.shape[2]
    qg = q.reshape(b, tq, hkv, hq // hkv, d).astype(jnp.float32) * d**-0.5
    logits = jnp.einsum("btkgd,bknd->bkgtn", qg, k.astype(jnp.float32))
    visible = jnp.arange(n)[None, :] <= jnp.arange(tq)[:, None] + prefix
    probs = jax.nn.softmax(jnp.where(visible, logits, -jnp.inf), axis=-1)
    out = jnp.einsum("bkgtn,bknd->btkgd", probs, v.astype(jnp.float32))
    return out.reshape(b, tq, hq, d).astype(q.dtype)


def dense_inputs(batch, q_len, kv_len, kv_heads, q_heads, head_dim, dtype, seed=1):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.standard_normal((batch, q_len, q_heads, head_dim), np.float32), dtype)
    k = jnp.asarray(rng.standard_normal((batch, kv_heads, kv_len, head_dim), np.float32), dtype)
    return q, k, k


def run_case(impl, q_lens, kv_lens, args_cfg, **options):
    """Seconds per call of one implementation (options: the backend's static tuning knobs)."""
    inputs = paged_inputs(q_lens, kv_lens, **args_cfg)
    fn = jax.jit(lambda *a: ragged_paged_attention(*a, implementation=impl, **options))
    return timed(fn, *inputs)


def bench(impls, cfg, decode, prefill, with_dense):
    """Yields result dicts: one per (implementation, workload)."""
    itemsize = jnp.dtype(cfg["dtype"]).itemsize
    batch, context = decode
    dec_q, dec_kv = [1] * batch, [context] * batch
    kv_bytes = batch * context * cfg["kv_heads"] * cfg["head_dim"] * 2 * itemsize
    seqs, new, prefix = prefill
    pre_q, pre_kv = [new] * seqs, [new + prefix] * seqs
    flops = 4 * causal_pairs(pre_q, pre_kv) * cfg["q_heads"] * cfg["head_dim"]
    for impl in impls:
        s = run_case(impl, dec_q, dec_kv, cfg)
        yield {
            "impl": impl,
            "workload": f"decode B={batch} ctx={context}",
            "ms": s * 1e3,
            "achieved": kv_bytes / s / 1e9,
            "unit": "GB/s KV read",
        }
        s = run_case(impl, pre_q, pre_kv, cfg)
        yield {
            "impl": impl,
            "workload": f"extend {seqs}x{new} on {prefix} prefix",
            "ms": s * 1e3,
            "achieved": flops / s / 1e9,
            "unit": "GFLOP/s useful",
        }
    if with_dense:
        args = (cfg["kv_heads"], cfg["q_heads"], cfg["head_dim"], cfg["dtype"])
        s = timed(
            jax.jit(lambda q, k, v: dense_attention(q, k, v, context - 1)), *dense_inputs(batch, 1, context, *args)
        )
        yield {
            "impl": "dense jnp (contiguous)",
            "workload": f"decode B={batch} ctx={context}",
            "ms": s * 1e3,
            "achieved": kv_bytes / s / 1e9,
            "unit": "GB/s KV read",
        }
        s = timed(
            jax.jit(lambda q, k, v: dense_attention(q, k, v, prefix)), *dense_inputs(seqs, new, new + prefix, *args)
        )
        yield {
            "impl": "dense jnp (contiguous)",
            "workload": f"extend {seqs}x{new} on {prefix} prefix",
            "ms": s * 1e3,
            "achieved": flops / s / 1e9,
            "unit": "GFLOP/s useful",
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impls", default="xla,reference")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--kv-heads", type=int, default=3)
    parser.add_argument("--q-heads", type=int, default=9)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--page-size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--prefill-seqs", type=int, default=1)
    parser.add_argument("--prefill-new", type=int, default=1024)
    parser.add_argument("--prefill-prefix", type=int, default=0)
    parser.add_argument("--no-dense", action="store_true")
    a = parser.parse_args()
    on_gpu = jax.devices()[0].platform == "gpu"
    cfg = dict(
        kv_heads=a.kv_heads, q_heads=a.q_heads, head_dim=a.head_dim, page_size=a.page_size, dtype=jnp.dtype(a.dtype)
    )
    print(f"device: {jax.devices()[0].device_kind}  jax {jax.__version__}  config {a}")
    ceilings = measure_ceilings(cfg["dtype"], on_gpu)
    print("ceilings: " + "  ".join(f"{k} {v:.1f}" for k, v in ceilings.items()))
    print(f"{'implementation':<24} {'workload':<32} {'ms':>9} {'achieved':>10}  unit   (% of ceiling)")
    for r in bench(
        a.impls.split(","), cfg, (a.batch, a.context), (a.prefill_seqs, a.prefill_new, a.prefill_prefix), not a.no_dense
    ):
        ceiling = ceilings["read_GBps"] if "GB/s" in r["unit"] else ceilings["matmul_GFLOPs"]
        print(
            f"{r['impl']:<24} {r['workload']:<32} {r['ms']:>9.3f} {r['achieved']:>10.2f}  "
            f"{r['unit']} ({100 * r['achieved'] / ceiling:.0f}%)",
            flush=True,
        )


if __name__ == "__main__":
    main()
