"""Whole-model step speed on a GPU: a Llama-3.2-1B-shaped model with random bf16 weights, through the Runner.

    PYTHONPATH=. python3 tools/gpu_model_bench.py [--attn-impl NAME] [--json out.json]

Issue 19's GPU targets (H200; they replace issue 7's 12 ms / 800 / 10,000): prefill of 2048 tokens <= 10 ms,
decode >= 1,000 tok/s at batch 1 and >= 15,000 tok/s at batch 32 (512-token contexts). Ceilings are measured
in the same run: bf16 matmul TFLOP/s (8192^3) and HBM read TB/s (a jitted sum over 2 GiB). Random weights: the timing does not depend on their values.
Imports only jax/numpy and this repo (the GPU image has no gguf). Runs on CPU too (slowly) with --tiny.
`decode_b<N>_fed` rows: the same decode steps pipelined as the overlapped engine loop runs them (step n+1
dispatched with its tokens fed on the device from step n, before step n's tokens are read back), so the
host's packing and read-back overlap the device's work (issue 19).
`decode_b<N>_k<K>` rows: multi-step decode (`--decode-steps K`, default 8): one device call runs K decode
iterations (StepPlan.decode_steps), so the host's work is paid once per K tokens; ms is per token position
(the call's wall time / K), tok/s counts all K tokens of every row.

The layer loop (issue 19 item 4): `--unroll V [V ...]` runs the bench once per value of --unroll-layers
(scan, N layers per loop iteration, full; the bare flag: full), `--command-buffers C [C ...]` adds runs of
the scan under XLA GPU command buffers: `off` (XLA_FLAGS --xla_gpu_enable_command_buffer=, none), `while`
(+WHILE,+CONDITIONAL, so the layer loop itself is captured into one CUDA graph, with
--xla_gpu_graph_min_graph_size=1), `default` (XLA's own list). With more than one variant each runs in a
child process of its own (XLA reads XLA_FLAGS once per process; compile times start from nothing) and a
summary table sets them side by side, each with its compile time: warm-up compiles one program after
another (workers=1), so seconds / programs is the mean compile time of one bucket's program. On a CPU
the command-buffer flags are parsed and ignored: `--tiny --unroll scan 2 full --command-buffers off while`
checks the whole path.

    PYTHONPATH=. python3 tools/gpu_model_bench.py --unroll scan 2 4 8 full --command-buffers off while --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_step import decode_plans, median_time, pages_for, prefill_plan, profile, sgemm_gflops  # noqa: E402

from trellis_jax import layer_unroll  # noqa: E402
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
TARGETS = {"prefill": ("ms", 10.0), "decode_b1": ("tok/s", 1000.0), "decode_b32": ("tok/s", 15000.0)}


def matmul_tflops(size: int = 8192, repeats: int = 10) -> float:
    return sgemm_gflops(size, repeats, jnp.bfloat16) / 1e3


def read_tbps(gib: float = 2.0, repeats: int = 10) -> float:
    data = jnp.ones((int(gib * 2**30) // 2,), jnp.bfloat16)
    total = jax.jit(lambda x: jnp.sum(x, dtype=jnp.float32))
    wall, _ = median_time(lambda: total(data).block_until_ready(), repeats)
    return data.nbytes / wall / 1e12


# XLA GPU command buffers (CUDA graphs) per variant: the flags a child process runs under. The flag takes a
# list of command types, or +/- edits of XLA's default list; an empty value turns command buffers off.
COMMAND_BUFFERS = {
    "default": "",
    "off": "--xla_gpu_enable_command_buffer=",
    "while": "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL --xla_gpu_graph_min_graph_size=1",
}


def ceilings() -> dict:
    """The device's bf16 matmul and read rates; small sizes on a CPU (an 8192^3 bf16 product takes minutes
    there), so the CPU mode checks the script, not the machine."""
    big = jax.default_backend() != "cpu"
    return {
        "bf16_matmul_tflops": matmul_tflops(8192 if big else 512),
        "read_tbps": read_tbps(2.0 if big else 0.125),
    }


def bench(args) -> dict:
    unroll = args.unroll[0]
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
        unroll_layers=unroll,
    )
    results = {
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "config": ("tiny" if args.tiny else "llama-3.2-1b") + f", layers {layer_unroll.describe(unroll)}",
        "unroll_layers": layer_unroll.describe(unroll),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "ceilings": ceilings(),
        "warmup_seconds": runner.warmup(progress=False, workers=1),  # one compile at a time: per-program seconds
        "compiled_programs": runner.num_compilations,
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
        f"{results['warmup_seconds']:.0f} s for {results['compiled_programs']} programs; compilations after warm-up "
        f"{results['compilations_after_warmup']}; XLA_FLAGS {results['xla_flags'] or '-'}",
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
    parser.add_argument(
        "--unroll",
        nargs="*",
        type=layer_unroll.parse_flag,
        default=[layer_unroll.SCAN],
        metavar="N|full",
        help="--unroll-layers values to run, each its own variant (scan, N, full; the bare flag: full)",
    )
    parser.add_argument(
        "--command-buffers",
        nargs="+",
        choices=sorted(COMMAND_BUFFERS),
        default=["default"],
        help="XLA GPU command-buffer settings to run the scan under, each its own variant (child process)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one variant, flags set by the parent
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    args.unroll = args.unroll or [layer_unroll.FULL]  # the old switch spelling, `--unroll` alone
    variants = [(u, "default") for u in args.unroll] + [
        (layer_unroll.SCAN, c) for c in args.command_buffers if c != "default"
    ]
    start = time.perf_counter()
    if args.child or variants == [(args.unroll[0], "default")]:
        results = bench(args)
        results["total_seconds"] = time.perf_counter() - start
        print(table(results), flush=True)
    else:
        results = {"variants": [run_child(args, *variant) for variant in variants]}
        results["total_seconds"] = time.perf_counter() - start
        print("\n" + summary(results["variants"]), flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


def run_child(args, unroll: int, command_buffers: str) -> dict:
    """One variant in a fresh process (its own XLA_FLAGS, its compiles from nothing): its results."""
    argv = [sys.executable, os.path.abspath(__file__), "--child", "--unroll", layer_unroll.describe(unroll)]
    argv += ["--page-size", str(args.page_size), "--context", str(args.context)]
    argv += ["--prefill-tokens", str(args.prefill_tokens), "--batches", *map(str, args.batches)]
    argv += ["--repeats", str(args.repeats), "--decode-steps", str(args.decode_steps)]
    argv += ["--tiny"] * args.tiny + ["--profile"] * args.profile
    argv += ["--attn-impl", args.attn_impl] if args.attn_impl else []
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS", ""), COMMAND_BUFFERS[command_buffers]]))
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "variant.json")
        subprocess.run([*argv, "--json", out], env=env, check=True)
        with open(out) as f:
            results = json.load(f)
    results["command_buffers"] = command_buffers
    return results


def summary(variants: list[dict]) -> str:
    """The variants side by side: compile time, prefill and decode ms per step (tok/s)."""
    batches = [key for key in variants[0] if key.startswith("decode_b") and key[8:].isdigit()]
    lines = [
        "| layers | command buffers | warm-up s (programs, s each) | prefill ms | "
        + " | ".join(f"{b} ms (tok/s) | {b} fed ms" for b in batches)
        + " | compiles after warm-up |",
        "|---|---|---|---|" + "---|---|" * len(batches) + "---|",
    ]
    for v in variants:
        seconds, programs = v["warmup_seconds"], v["compiled_programs"]
        cells = [v["unroll_layers"], v["command_buffers"], f"{seconds:.1f} ({programs}, {seconds / programs:.2f})"]
        cells.append(f"{v['prefill']['ms']:.2f}")
        for b in batches:
            cells += [f"{v[b]['ms']:.2f} ({v[b]['tok/s']:.0f})", f"{v[b + '_fed']['ms']:.2f}"]
        cells.append(str(v["compilations_after_warmup"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
