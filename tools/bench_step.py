"""Raw step speed of the Runner against this machine's own ceilings, measured in one run.

    python tools/bench_step.py [--model SPEC] [--context 1024] [--batches 1 8 32] [--profile] [--json out.json]
    python tools/bench_step.py --compare-native      # native CPU kernels vs pure XLA, alternating
    python tools/bench_step.py --compare-kv-dtype    # float32 vs bfloat16 KV pages, alternating
    python tools/bench_step.py --compare-deterministic   # batch-invariant (--deterministic) vs default kernels
    python tools/bench_step.py --compare-weight-format   # a quantized GGUF packed vs dequantized to --dtype
    python tools/bench_step.py --compare-quantization    # --dtype floats vs --quantization int8 / int4 of them
    python tools/bench_step.py --compare-unroll scan 2 4 full   # the layer loop scanned vs unrolled, alternating
    python tools/bench_step.py --compare-matmul-backend  # calibrated backends vs native / xla pinned

Measures, on the default model in float32 unless told otherwise:
  * ceilings: sgemm GFLOP/s (a jitted 2048^3 matmul) and memory read GB/s (a jitted sum over 512 MiB);
  * prefill of --prefill-tokens tokens in one step (tok/s);
  * decode steps at each batch size with every sequence at --context tokens of context (tok/s).
Each number is the median of --repeats timed steps after one untimed step, with the process CPU time
beside it: on a shared machine wall time counts the neighbours' jobs too, and tokens per CPU-second is a
conservative estimate of the unshared speed (it assumes no help from the second core). Decode contexts are
set up by position, not by prefilling them: attention reads the same number of KV bytes whatever they
hold, so the timing is the same and the benchmark takes seconds instead of minutes. The "floor" columns
are what the ceilings allow: matmul FLOPs at the sgemm rate (prefill) and weight + KV bytes at the read
rate (decode); the gap between step and floor is mostly attention.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from trellis_jax import layer_unroll
from trellis_jax.checkpoints import load_model
from trellis_jax.dtypes import WEIGHT_FORMATS
from trellis_jax.model.params import streamed_weight_bytes
from trellis_jax.runner import Runner
from trellis_jax.runner.runner import MIN_TOKEN_BUCKET
from trellis_jax.step_plan import SequenceWork, StepPlan

TARGETS = {"prefill": 600.0, "decode_b1": 30.0, "decode_b8": 150.0, "decode_b32": 250.0}


def median_time(fn, repeats: int) -> tuple[float, float]:
    """(median wall seconds, median process CPU seconds) of `repeats` calls after one warm call."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def sgemm_gflops(size: int = 2048, repeats: int = 5, dtype=jnp.float32) -> float:
    """Matmul rate of a jitted size^3 product (GFLOP/s); float32 by default (sgemm)."""
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    b = jax.random.normal(jax.random.key(1), (size, size), dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    wall, _ = median_time(lambda: matmul(a, b).block_until_ready(), repeats)
    return 2 * size**3 / wall / 1e9


def memory_read_gbps(mib: int = 512, repeats: int = 5) -> float:
    data = jnp.ones((mib * 2**20 // 4,), jnp.float32)
    total = jax.jit(jnp.sum)
    wall, _ = median_time(lambda: total(data).block_until_ready(), repeats)
    return data.nbytes / wall / 1e9


def pages_for(tokens: int, page_size: int) -> int:
    return -(-tokens // page_size)


def prefill_plan(num_tokens: int, page_size: int, vocab_size: int = 1010) -> StepPlan:
    """One prompt of num_tokens ids in [10, min(vocab_size, 1010)) (a tiny preset's vocabulary is 320)."""
    pages = list(range(1, 1 + pages_for(num_tokens, page_size)))
    spread = min(vocab_size, 1010) - 10
    return StepPlan([SequenceWork("prefill", [(7 * i + 1) % spread + 10 for i in range(num_tokens)], 0, pages, True)])


def decode_plans(batch: int, context: int, steps: int, page_size: int, first_page: int):
    """One plan per step; sequence b owns a disjoint page range and decodes at position context + step."""
    per_seq = pages_for(context + steps + 1, page_size)
    tables = [list(range(first_page + b * per_seq, first_page + (b + 1) * per_seq)) for b in range(batch)]
    return [
        StepPlan(
            [SequenceWork(f"d{b}", [100 + b], context + step, tables[b], True, rng_step=step) for b in range(batch)]
        )
        for step in range(steps)
    ]


def run_plans(runner: Runner, plans) -> None:
    for plan in plans:
        runner.run(plan)


def plan_runner_options(args) -> dict:
    """Runner options with pages for one prefill and max(batches) decoding sequences, buckets for exactly those."""
    steps = args.repeats + 1
    decode_pages = max(args.batches) * pages_for(args.context + steps + 2, args.page_size)
    decode_buckets = {max(MIN_TOKEN_BUCKET, batch) for batch in args.batches}
    return {
        "page_size": args.page_size,
        "num_pages": 2 + pages_for(args.prefill_tokens, args.page_size) + decode_pages,
        "token_buckets": sorted(decode_buckets | {args.prefill_tokens}),
        "seq_buckets": sorted(decode_buckets),
    }


def make_runner(
    model, args, kv_dtype: str | None = None, batch_invariant: bool = False, unroll_layers=1, matmul_backend="auto"
) -> Runner:
    return Runner(
        model,
        **plan_runner_options(args),
        attn_impl=args.attn_impl,
        kv_dtype=kv_dtype or args.kv_dtype,
        batch_invariant=batch_invariant,
        unroll_layers=unroll_layers,
        matmul_backend=matmul_backend,
    )


def load_bench_model(args):
    """--model in --dtype with --weight-format: what every mode times, unless it compares formats itself."""
    return load_model(args.model, dtype=args.dtype, weight_format=args.weight_format)


def bench(args) -> dict:
    load_start = os.getloadavg()[0]
    model = load_bench_model(args)  # first: a bad spec or format fails before the ceilings' seconds
    ceilings = {"sgemm_gflops": sgemm_gflops(), "mem_read_gbps": memory_read_gbps()}
    config = model.config
    steps = args.repeats + 1
    runner = make_runner(model, args)
    print(f"KV pool: {runner.kv_pool.describe()}", file=sys.stderr)
    compile_seconds = runner.warmup()
    results = {
        "model": model.source,
        "dtype": args.dtype,
        "weight_format": args.weight_format,
        "page_size": args.page_size,
        "context": args.context,
        "ceilings": ceilings,
        "buckets": len(runner.compiled_buckets),
        "warmup_seconds": compile_seconds,
    }

    plan = prefill_plan(args.prefill_tokens, args.page_size)
    wall, cpu = median_time(lambda: runner.run(plan), args.repeats)
    floor = config.prefill_flops(args.prefill_tokens) / (ceilings["sgemm_gflops"] * 1e9)
    results["prefill"] = {
        "tokens": args.prefill_tokens,
        "seconds": wall,
        "cpu_seconds": cpu,
        "tok_per_s": args.prefill_tokens / wall,
        "floor_seconds": floor,
    }

    first_page = 1 + pages_for(args.prefill_tokens, args.page_size)
    weight_bytes = streamed_weight_bytes(runner.params)  # as loaded: packed weights read a fraction
    for batch in args.batches:
        plans = decode_plans(batch, args.context, steps, args.page_size, first_page)
        run_plans(runner, plans[:1])
        timings = [median_time(lambda p=p: runner.run(p), 1) for p in plans[1:]]
        wall = statistics.median(t[0] for t in timings)
        cpu = statistics.median(t[1] for t in timings)
        kv_bytes = batch * (args.context + 1) * config.kv_bytes_per_token()
        floor = (weight_bytes + kv_bytes) / (ceilings["mem_read_gbps"] * 1e9)
        results[f"decode_b{batch}"] = {
            "batch": batch,
            "seconds": wall,
            "cpu_seconds": cpu,
            "tok_per_s": batch / wall,
            "floor_seconds": floor,
        }
    if args.profile:
        biggest = max(args.batches)
        plan = decode_plans(biggest, args.context, steps + 1, args.page_size, first_page)[-1]
        results[f"profile_decode_b{biggest}"] = profile(runner, plan, args.repeats)
    results["loadavg_start_end"] = [load_start, os.getloadavg()[0]]
    results["compilations_after_warmup"] = runner.num_compilations - len(runner.compiled_buckets)
    return results


def profile(runner: Runner, plan: StepPlan, repeats: int) -> dict:
    """Where a step's time goes (CPU ms): the runner vs the model's forward alone, the attention kernel
    alone (one layer, times num_layers) and the sampler alone, on the same plan."""
    from pallas_kernels.ragged_paged_attention import ragged_paged_attention
    from trellis_jax.model import jit_forward
    from trellis_jax.runner import wire
    from trellis_jax.runner.packing import pack
    from trellis_jax.runner.sampling import sample

    config = runner.config
    packed = pack(
        plan,
        runner.buckets,
        page_size=runner.page_size,
        num_pages=runner.num_pages,
        vocab_size=config.vocab_size,
        max_logprobs=runner.max_logprobs,
    )
    batch = jax.tree.map(jnp.asarray, packed.model_inputs)
    state = {}  # the runner's pages, borrowed after its own timing and handed back at the end

    def forward_only():
        logits, state["kv"] = jit_forward(
            runner.params, state["kv"], batch, config=config, unroll_layers=runner.unroll_layers
        )
        logits.block_until_ready()

    def attention_layer():
        q = jnp.ones((batch.token_ids.shape[0], config.num_heads, config.head_dim), state["kv"].k.dtype)
        return ragged_paged_attention(
            q,
            state["kv"].k,
            state["kv"].v,
            jnp.int32(0),
            batch.kv_lens,
            batch.page_table,
            batch.cu_q_lens,
            batch.num_seqs,
            implementation=runner.attn_impl,
        )

    attention = jax.jit(attention_layer)
    inputs = wire.decode(*(jnp.asarray(a) for a in runner._inputs(packed)))
    logits = jax.random.normal(jax.random.key(0), (packed.bucket.num_seqs, config.vocab_size), jnp.float32)
    sampler = jax.jit(lambda logits, knobs: sample(logits, knobs, max_logprobs=runner.max_logprobs))
    hot = inputs.sampling._replace(
        temperature=inputs.sampling.temperature + 0.8,
        top_p=inputs.sampling.top_p * 0.9,
        top_k=inputs.sampling.top_k + 40,
        num_logprobs=inputs.sampling.num_logprobs + 5,
    )
    timings = {"runner_run": median_time(lambda: runner.run(plan), repeats)}
    state["kv"] = runner._kv
    timings |= {
        "forward_only": median_time(forward_only, repeats),
        "attention_all_layers": tuple(
            config.num_layers * t for t in median_time(lambda: attention().block_until_ready(), repeats)
        ),
        "sampler_greedy": median_time(lambda: sampler(logits, inputs.sampling).token_ids.block_until_ready(), repeats),
        "sampler_topk_topp_logprobs": median_time(lambda: sampler(logits, hot).token_ids.block_until_ready(), repeats),
    }
    runner._kv = state["kv"]
    return {name: {"cpu_ms": 1000 * cpu, "wall_ms": 1000 * wall} for name, (wall, cpu) in timings.items()}


def markdown(results: dict) -> str:
    c = results["ceilings"]
    lines = [
        f"ceilings: sgemm {c['sgemm_gflops']:.0f} GFLOP/s, memory read {c['mem_read_gbps']:.1f} GB/s; "
        f"warm-up {results['warmup_seconds']:.0f} s for {results['buckets']} buckets; "
        f"load average {results['loadavg_start_end'][0]:.1f} -> {results['loadavg_start_end'][1]:.1f}",
        "",
        "| step | tok/s | target | step ms | CPU ms | tok per CPU-s | floor ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in [k for k in results if k == "prefill" or k.startswith("decode_")]:
        r, target = results[name], TARGETS.get(name, float("nan"))
        tokens = r["tok_per_s"] * r["seconds"]
        lines.append(
            f"| {name} | {r['tok_per_s']:.0f} | {target:.0f} | {1000 * r['seconds']:.0f} | "
            f"{1000 * r['cpu_seconds']:.0f} | {tokens / r['cpu_seconds']:.0f} | "
            f"{1000 * r['floor_seconds']:.0f} |"
        )
    for key, parts in results.items():
        if key.startswith("profile_"):
            lines += [
                "",
                f"{key} (ms): "
                + ", ".join(f"{name} {t['cpu_ms']:.1f} CPU / {t['wall_ms']:.1f} wall" for name, t in parts.items()),
            ]
    return "\n".join(lines)


def add_plan_flags(parser: argparse.ArgumentParser) -> None:
    """The model, the plans `alternate` times (their sizes and repeats) and --json: every step bench's flags."""
    parser.add_argument("--model", default=None, help="checkpoint spec (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--page-size", type=int, default=16)
    parser.add_argument("--context", type=int, default=1024, help="context of every decoding sequence")
    parser.add_argument("--prefill-tokens", type=int, default=1024)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the results here")


def report(results: dict, text: str, json_path: str | None) -> None:
    """Print the table; write the results as JSON too when asked."""
    print(text)
    if json_path:
        with open(json_path, "w") as out:
            json.dump(results, out, indent=2)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_plan_flags(parser)
    parser.add_argument("--attn-impl", default=None)
    parser.add_argument("--kv-dtype", default=None, help="KV page dtype (default: the model's)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also split the largest decode step: runner vs forward vs attention vs sampler",
    )
    parser.add_argument(
        "--compare-native",
        action="store_true",
        help="instead: native CPU kernels vs the pure-XLA paths, alternating step by step",
    )
    parser.add_argument(
        "--compare-kv-dtype",
        action="store_true",
        help="instead: float32 vs bfloat16 KV pages, alternating step by step",
    )
    parser.add_argument(
        "--compare-deterministic",
        action="store_true",
        help="batch-invariant kernels (--deterministic) vs the default ones, alternating",
    )
    parser.add_argument(
        "--compare-weight-format",
        action="store_true",
        help="instead: a quantized GGUF's weights packed vs dequantized to --dtype, alternating step by step",
    )
    parser.add_argument(
        "--compare-quantization",
        action="store_true",
        help="instead: the float model vs its matrices quantized at load (int8, int4), alternating step by step",
    )
    parser.add_argument(
        "--compare-unroll",
        nargs="+",
        type=layer_unroll.parse_flag,
        metavar="N|full",
        help="instead: the layer loop at these --unroll-layers values (e.g. scan 2 4 full), alternating step by "
        "step, with each one's compile seconds per program",
    )
    parser.add_argument(
        "--compare-matmul-backend",
        action="store_true",
        help="instead: the calibrated matmul backends vs native and xla pinned, alternating step by step",
    )
    parser.add_argument(
        "--weight-format",
        choices=WEIGHT_FORMATS,
        default="float",
        help="a quantized GGUF's weights as load_model keeps them (default: float, dequantized to --dtype)",
    )
    args = parser.parse_args(argv)
    if args.weight_format != "float" and (args.compare_weight_format or args.compare_quantization):
        parser.error("--compare-weight-format and --compare-quantization choose the weight formats themselves")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    # Imported here, not at the top: bench_step_compare imports this module's plans and runners.
    from bench_step_compare import (
        calibration_markdown,
        compare_deterministic,
        compare_kv_dtype,
        compare_markdown,
        compare_matmul_backend,
        compare_native,
        compare_quantization,
        compare_unroll,
        compare_weight_format,
    )

    comparison = (
        compare_native
        if args.compare_native
        else compare_kv_dtype
        if args.compare_kv_dtype
        else compare_deterministic
        if args.compare_deterministic
        else compare_weight_format
        if args.compare_weight_format
        else compare_quantization
        if args.compare_quantization
        else compare_unroll
        if args.compare_unroll
        else compare_matmul_backend
        if args.compare_matmul_backend
        else None
    )
    if comparison:
        results = comparison(args)
        text = compare_markdown(results)
        if "calibration" in results:
            text += "\n\n" + calibration_markdown(results["calibration"])
        report(results, text, args.json)
    else:
        results = bench(args)
        report(results, markdown(results), args.json)


if __name__ == "__main__":
    main()
