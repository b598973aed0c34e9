"""Whole-model step speed on a GPU: a Llama-3.2-1B-shaped model with random bf16 weights, through the Runner.

    PYTHONPATH=. python3 tools/gpu_model_bench.py [--attn-impl NAME] [--json out.json]

Issue 7's GPU targets (H200): prefill of 2048 tokens <= 12 ms, decode >= 800 tok/s at batch 1 and
>= 10,000 tok/s at batch 32. Ceilings are measured in the same run: bf16 matmul TFLOP/s (8192^3) and
HBM read TB/s (a jitted sum over 2 GiB). Random weights: the timing does not depend on their values.
Imports only jax/numpy and this repo (the GPU image has no gguf). Runs on CPU too (slowly) with --tiny.
`decode_b<N>_fed` rows: the same decode steps pipelined as the overlapped engine loop runs them (step n+1
dispatched with its tokens fed on the device from step n, before step n's tokens are read back), so the
host's packing and read-back overlap the device's work (issue 19).
`decode_b<N>_k<K>` rows: multi-step decode (`--decode-steps K`, default 8): one device call runs K decode
iterations (StepPlan.decode_steps), so the host's work is paid once per K tokens; ms is per token position
(the call's wall time / K), tok/s counts all K tokens of every row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_step import decode_plans, median_time, pages_for, prefill_plan, profile, sgemm_gflops  # noqa: E402

from trellis_jax.model.config import ModelConfig  # noqa: E402
from trellis_jax.model.params import init_params  # noqa: E402
from trellis_jax.runner import Runner  # noqa: E402
from trellis_jax.runner.runner import MIN_TOKEN_BUCKET  # noqa: E402
from trellis_jax.step_plan import PENDING_TOKEN, StepPlan  # noqa: E402

LLAMA_32_1B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 128256,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
}
TINY = dict(
    LLAMA_32_1B,
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=1024,
)
TARGETS = {"prefill": ("ms", 12.0), "decode_b1": ("tok/s", 800.0), "decode_b32": ("tok/s", 10000.0)}


def matmul_tflops(size: int = 8192, repeats: int = 10) -> float:
    return sgemm_gflops(size, repeats, jnp.bfloat16) / 1e3


def read_tbps(gib: float = 2.0, repeats: int = 10) -> float:
    data = jnp.ones((int(gib * 2**30) // 2,), jnp.bfloat16)
    total = jax.jit(lambda x: jnp.sum(x, dtype=jnp.float32))
    wall, _ = median_time(lambda: total(data).block_until_ready(), repeats)
    return data.nbytes / wall / 1e12


def unroll_layer_scan() -> None:
    """Experiment: unroll every lax.scan (the layer loop included) to see what the loop costs on a GPU."""
    import functools

    jax.lax.scan = functools.partial(jax.lax.scan, unroll=True)


def bench(args) -> dict:
    if args.unroll:
        unroll_layer_scan()
    config = ModelConfig.from_hf_config(TINY if args.tiny else LLAMA_32_1B, dtype="bfloat16")
    params = init_params(config, jax.random.key(0))
    steps = args.repeats + 1
    # --profile decodes two steps further than the timed plans: size pages and context for those too.
    longest = args.context + steps + 3 + args.decode_steps
    per_seq = pages_for(longest, args.page_size)
    num_pages = 2 + pages_for(args.prefill_tokens, args.page_size) + max(args.batches) * per_seq
    decode_buckets = {max(MIN_TOKEN_BUCKET, b) for b in args.batches}
    runner = Runner(
        (config, params),
        page_size=args.page_size,
        num_pages=num_pages,
        token_buckets=sorted(decode_buckets | {args.prefill_tokens}),
        seq_buckets=sorted(decode_buckets),
        max_context_len=max(args.prefill_tokens, longest),
        attn_impl=args.attn_impl,
        decode_steps=args.decode_steps,
    )
    results = {
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "config": ("tiny" if args.tiny else "llama-3.2-1b") + (" unrolled" if args.unroll else ""),
        "ceilings": {"bf16_matmul_tflops": matmul_tflops(), "read_tbps": read_tbps()},
        "warmup_seconds": runner.warmup(),
        "kv_pool": runner.kv_pool.describe(),
    }
    compiled_at_warmup = runner.num_compilations
    plan = prefill_plan(args.prefill_tokens, args.page_size)
    wall, _ = median_time(lambda: runner.run(plan), args.repeats)
    flops = config.prefill_flops(args.prefill_tokens)
    results["prefill"] = {
        "tokens": args.prefill_tokens,
        "ms": 1000 * wall,
        "tok/s": args.prefill_tokens / wall,
        "tflops": flops / wall / 1e12,
    }
    first_page = 1 + pages_for(args.prefill_tokens, args.page_size)
    for batch in args.batches:
        plans = decode_plans(batch, args.context, steps + args.decode_steps, args.page_size, first_page)[:steps]
        runner.run(plans[0])
        wall = statistics.median(median_time(lambda p=p: runner.run(p), 1)[0] for p in plans[1:])
        moved = config.weight_bytes() + batch * (args.context + 1) * config.kv_bytes_per_token()
        results[f"decode_b{batch}"] = {
            "batch": batch,
            "context": args.context,
            "ms": 1000 * wall,
            "tok/s": batch / wall,
            "tbps": moved / wall / 1e12,
        }
        results[f"decode_b{batch}_fed"] = dict(results[f"decode_b{batch}"], **pipelined(runner, plans, batch))
        results[f"decode_b{batch}_fed"]["tbps"] = moved / (results[f"decode_b{batch}_fed"]["ms"] / 1000) / 1e12
        if args.decode_steps > 1:
            k = args.decode_steps
            multi = StepPlan([replace(w, num_steps=k) for w in plans[0].sequences], decode_steps=k)
            wall, _ = median_time(lambda m=multi: runner.run(m), args.repeats)
            results[f"decode_b{batch}_k{k}"] = {
                "batch": batch,
                "context": args.context,
                "ms": 1000 * wall / k,
                "tok/s": batch * k / wall,
                "tbps": k * moved / wall / 1e12,
            }
    if args.profile:
        for batch in args.batches:
            plan = decode_plans(batch, args.context, steps + 2, args.page_size, first_page)[-1]
            results[f"profile_decode_b{batch}"] = profile(runner, plan, args.repeats)
    results["compilations_after_warmup"] = runner.num_compilations - compiled_at_warmup
    return results


def pipelined(runner: Runner, plans, batch: int) -> dict:
    """Mean step time of plans[1:] run overlapped: each step is dispatched with its tokens fed on the device
    from the step before (PENDING_TOKEN) before that step's tokens are collected."""
    fed = [StepPlan([replace(w, token_ids=[PENDING_TOKEN]) for w in p.sequences]) for p in plans]
    runner.run(plans[0])
    start = time.perf_counter()
    previous = None
    for plan in fed[1:]:
        launch = runner.dispatch(plan)
        if previous is not None:
            runner.collect(previous)
        previous = launch
    runner.collect(previous)
    wall = (time.perf_counter() - start) / (len(fed) - 1)
    return {"ms": 1000 * wall, "tok/s": batch / wall}


def table(results: dict) -> str:
    c = results["ceilings"]
    lines = [
        f"{results['device']} jax {results['jax']} model {results['config']}: bf16 matmul "
        f"{c['bf16_matmul_tflops']:.0f} TFLOP/s, read {c['read_tbps']:.2f} TB/s; warm-up "
        f"{results['warmup_seconds']:.0f} s; compilations after warm-up {results['compilations_after_warmup']}",
        "",
        "| step | ms | tok/s | achieved | target |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if name == "prefill" or (name.startswith("decode_b") and "tbps" in r):
            rate = f"{r['tflops']:.0f} TFLOP/s" if name == "prefill" else f"{r['tbps']:.2f} TB/s"
            unit, goal = TARGETS.get(name.removesuffix("_fed").split("_k")[0], ("", None))
            target = f"{'<=' if unit == 'ms' else '>='} {goal:g} {unit}" if goal else "-"
            lines.append(f"| {name} | {r['ms']:.2f} | {r['tok/s']:.0f} | {rate} | {target} |")
    for key, parts in results.items():
        if key.startswith("profile_"):
            lines += ["", f"{key} (wall ms): " + ", ".join(f"{name} {t['wall_ms']:.2f}" for name, t in parts.items())]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model (CPU smoke run)")
    parser.add_argument("--page-size", type=int, default=16)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--prefill-tokens", type=int, default=2048)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--attn-impl", default=None)
    parser.add_argument("--decode-steps", type=int, default=8, help="K of the decode_b<N>_k<K> rows (1: none)")
    parser.add_argument(
        "--profile", action="store_true", help="split each decode step: runner vs forward vs attention vs sampler"
    )
    parser.add_argument("--unroll", action="store_true", help="experiment: unroll the layer scan")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = bench(args)
    results["total_seconds"] = time.perf_counter() - start
    print(table(results), flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
