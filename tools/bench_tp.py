"""Step speed at tensor-parallel sizes side by side: TP 1 vs 2 vs 4 ... on the same plans, alternating.

    python tools/bench_tp.py [--sizes 1,2,4] [--model SPEC] [--dtype bfloat16] [--context 1024]
                             [--batches 1 8 32] [--prefill-tokens 1024] [--repeats 5] [--json out.json]
    # CPU, forced devices (not faster on a few cores: every device shares them):
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tools/bench_tp.py --sizes 1,2,4

One Runner per size over the same loaded model (float weights: a quantized GGUF is dequantized), warmed up,
then each plan (one prefill of --prefill-tokens, decode steps of every --batches size at --context tokens of
context) runs on every runner in turn, step by step, so a neighbour's load hits all sizes alike
(bench_step_compare's `alternate`). Prints tok/s per size, each size's speed-up over TP 1, the weights and KV
pages held per device, and the compilations after warm-up (0 expected). Default sizes: 1 and every power of two
up to the visible device count. On a multi-GPU machine: `python tools/bench_tp.py --dtype bfloat16 --sizes 1,2,4,8`.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_step import add_plan_flags, plan_runner_options, report  # noqa: E402
from bench_step_compare import alternate  # noqa: E402

from trellis_jax.checkpoints import load_model  # noqa: E402
from trellis_jax.runner import Runner  # noqa: E402


def default_sizes() -> list[int]:
    count, sizes = len(jax.devices()), [1]
    while sizes[-1] * 2 <= count:
        sizes.append(sizes[-1] * 2)
    return sizes


def make_runner(loaded, args, size: int) -> Runner:
    """A Runner at tensor-parallel `size` with pages and buckets for exactly the bench's plans."""
    runner = Runner(loaded, **plan_runner_options(args), tensor_parallel_size=size)
    runner.warmup(progress=False)
    return runner


def per_device_bytes(tree) -> int:
    """Bytes the first device holds of every array in `tree`."""
    device = jax.devices()[0]
    return sum(
        int(shard.data.nbytes)
        for leaf in jax.tree.leaves(tree)
        for shard in leaf.addressable_shards
        if shard.device == device
    )


def bench(args) -> dict:
    loaded = load_model(args.model, dtype=args.dtype, weight_format="float")
    runners = {f"tp{size}": make_runner(loaded, args, size) for size in args.sizes}
    results = alternate(runners, args)
    results["device"] = jax.devices()[0].device_kind
    results["weight_bytes_per_device"] = {name: per_device_bytes(r.params) for name, r in runners.items()}
    results["kv_bytes_per_device"] = {name: per_device_bytes(r._kv) for name, r in runners.items()}
    return results


def markdown(results: dict) -> str:
    names = list(results["compilations_after_warmup"])
    lines = [
        f"device: {results['device']}; load average {results['loadavg_start']:.1f} -> {results['loadavg_end']:.1f}; "
        f"compilations after warm-up {results['compilations_after_warmup']}",
        "",
        "| per device | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        "| weights MiB | " + " | ".join(f"{results['weight_bytes_per_device'][n] / 2**20:.0f}" for n in names) + " |",
        "| KV MiB | " + " | ".join(f"{results['kv_bytes_per_device'][n] / 2**20:.1f}" for n in names) + " |",
        "",
        "| step tok/s | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for step, speeds in results.items():
        if step == "prefill" or step.startswith("decode_"):
            base = speeds[names[0]]
            cells = [f"{speeds[n]:.0f} ({speeds[n] / base:.2f}x)" for n in names]
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default=None, help="comma-separated TP sizes (default: 1, 2, 4, ... up to the devices)"
    )
    add_plan_flags(parser)
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else default_sizes()
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    results = bench(args)
    report(results, markdown(results), args.json)


if __name__ == "__main__":
    main()
