"""One-shot GPU check: every GPU backend vs the reference, then timings against measured ceilings.

Imports only jax, numpy, pallas_kernels and tools/bench_attention.py (the GPU image has nothing else).
  PYTHONPATH=. python3 tools/gpu_attention_check.py [--impls pallas_triton,xla] [--quick]
Writes a JSON copy of every result to $OUT/gpu_attention_check.json when $OUT is set.
Targets (issue 4, H200): decode B=32 ctx=2048 Hkv=8 page 16 bf16 >= 3.0 TB/s KV read (D=64 and 128);
extend 4 x 2048 new tokens on a 2048 prefix bf16 >= 50% of the bf16 matmul rate measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_attention as bench  # noqa: E402

from pallas_kernels.ragged_paged_attention import api  # noqa: E402

# (name, q_lens, kv_lens, page_size, kv_heads, q_heads, head_dim, dtype, options)
CHECKS = [
    ("decode ragged", [1] * 5, [1, 15, 16, 17, 300], 16, 2, 8, 128, "bfloat16", {}),
    ("extend prefix", [3, 40, 1, 130], [20, 100, 64, 130], 16, 2, 8, 64, "bfloat16", {}),
    ("prefill page64 mha", [70, 5], [70, 200], 64, 2, 2, 128, "bfloat16", {}),
    ("gqa3 f32", [1, 33, 2], [50, 33, 80], 16, 3, 9, 64, "float32", {}),
    (
        "soft cap + window",
        [1, 90, 1],
        [300, 120, 7],
        16,
        2,
        8,
        128,
        "bfloat16",
        {"soft_cap": 5.0, "sliding_window": 64},
    ),
]


def log(msg):
    print(msg, flush=True)


def check_correctness(impl):
    ok = True
    for name, q_lens, kv_lens, s, hkv, hq, d, dtype, opts in CHECKS:
        args = bench.paged_inputs(
            q_lens, kv_lens, kv_heads=hkv, q_heads=hq, head_dim=d, page_size=s, dtype=jnp.dtype(dtype), seed=3
        )

        def run(name, args=args, opts=opts, **kw):
            return jax.jit(lambda *a: api.ragged_paged_attention(*a, implementation=name, **opts, **kw))(*args)

        with jax.default_matmul_precision("highest"):  # the oracle must not round f32 to TF32
            ref = run("reference")
        try:
            out = run(impl)
            out = np.asarray(out.astype(jnp.float32))
        except Exception as error:  # report and go on: one backend must not hide the others
            log(f"  {impl:<14} {name:<22} ERROR {type(error).__name__}: {str(error)[:1500]}")
            log("".join(traceback.format_exc().splitlines(True)[-40:]))
            return False
        ref = np.asarray(ref.astype(jnp.float32))
        rel = float(np.nanmax(np.abs(out - ref)) / max(np.abs(ref).max(), 1e-6))
        tol = 1e-2 if dtype == "bfloat16" else 1e-5
        good = rel <= tol and not np.isnan(out).any()
        ok &= good
        log(f"  {impl:<14} {name:<22} max rel err {rel:.2e} {'ok' if good else 'FAIL'}")
    return ok


def perf(impl, sweeps, results, ceilings):
    for head_dim in (64, 128):
        cfg = dict(kv_heads=8, q_heads=32, head_dim=head_dim, page_size=16, dtype=jnp.dtype("bfloat16"))
        workloads = [("decode", [1] * 32, [2048] * 32), ("extend", [2048] * 4, [4096] * 4)]
        for kind, q_lens, kv_lens in workloads:
            for options in sweeps.get((impl, kind), [{}]):
                try:
                    seconds = bench.run_case(impl, q_lens, kv_lens, cfg, **options)
                except Exception as error:
                    log(f"  {impl} {kind} D={head_dim} {options}: ERROR {type(error).__name__}: {str(error)[:300]}")
                    continue
                if kind == "decode":
                    nbytes = 32 * 2048 * 8 * head_dim * 2 * 2
                    achieved, ceiling, unit = nbytes / seconds / 1e12, ceilings["read_GBps"] / 1e3, "TB/s"
                else:
                    flops = 4 * bench.causal_pairs(q_lens, kv_lens) * 32 * head_dim
                    achieved, unit = flops / seconds / 1e12, "TFLOP/s"
                    ceiling = ceilings["matmul_GFLOPs"] / 1e3
                row = dict(
                    impl=impl,
                    kind=kind,
                    head_dim=head_dim,
                    options=options,
                    us=seconds * 1e6,
                    achieved=achieved,
                    unit=unit,
                    pct_of_ceiling=100 * achieved / ceiling,
                )
                results.append(row)
                log(
                    f"  {impl:<14} {kind:<7} D={head_dim:<4} {str(options):<52} {seconds * 1e6:9.1f} us "
                    f"{achieved:8.2f} {unit} ({row['pct_of_ceiling']:.0f}% of ceiling)"
                )


SWEEPS = {
    ("pallas_triton", "decode"): [
        {},
        {"num_kv_splits": 8},
        {"num_kv_splits": 8, "chunk_tokens": 128},
        {"num_kv_splits": 16, "num_stages": 4},
    ],
    ("pallas_triton", "extend"): [{}, {"chunk_tokens": 128}, {"block_rows": 16, "num_warps": 4}, {"num_stages": 2}],
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--impls", default="pallas_triton,xla")
    parser.add_argument("--quick", action="store_true", help="default knobs only, no sweeps")
    a = parser.parse_args()
    started = time.time()
    device = jax.devices()[0]
    log(
        f"device {device.device_kind} ({device.platform}) jax {jax.__version__}; "
        f"default implementation: {api.default_implementation()}"
    )
    ceilings = bench.measure_ceilings(jnp.bfloat16, device.platform == "gpu")
    log("ceilings: " + "  ".join(f"{k} {v:.1f}" for k, v in ceilings.items()))
    impls = [i for i in a.impls.split(",") if i in api.available_implementations()]
    correct, results = {}, []
    for impl in impls:
        correct[impl] = check_correctness(impl)
        if correct[impl] and impl == "pallas_triton":
            perf(impl, {} if a.quick else SWEEPS, results, ceilings)
        # xla: correctness only (its while loops are a CPU design); interpret mode: too slow here
    log(f"done in {time.time() - started:.0f} s")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_attention_check.json"), "w") as f:
            json.dump(
                {
                    "device": device.device_kind,
                    "jax": jax.__version__,
                    "ceilings": ceilings,
                    "correct": correct,
                    "results": results,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
