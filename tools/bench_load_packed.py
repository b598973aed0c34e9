"""Load a GGUF with its weights packed and report what a big model costs: resident weight bytes (per matrix),
RSS now and at peak after each stage, and a few decode steps at batch 1.

    PYTHONPATH=. /usr/bin/time -v python tools/bench_load_packed.py /tmp/llama-3-8b-q4_k_m.gguf \\
        [--context 128] [--steps 3]

The Runner gets the loaded (config, params) and nothing else keeps them, so the prepared weights are the only
copy. Decode: one sequence at --context tokens of context, the median of --steps timed steps after one
untimed step, wall and process CPU seconds (on a shared machine CPU time is the steadier figure).
"""

from __future__ import annotations

import argparse
import gc
import resource
import time

import jax

from tools.bench_step import decode_plans, median_time
from trellis_jax.checkpoints import load_model
from trellis_jax.runner import Runner
from trellis_jax.runner.runner import MIN_TOKEN_BUCKET

PAGE = 16


def report_rss(stage: str) -> None:
    now = int(open("/proc/self/statm").read().split()[1]) * 4096
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"{stage:14s} RSS {now / 2**30:6.2f} GiB  peak {peak / 2**30:6.2f} GiB", flush=True)


def report_weights(params: dict) -> None:
    entries = [("embed", params["embed"]), ("lm_head", params.get("lm_head")), *params["layers"].items()]
    for name, value in entries:
        if value is not None:
            kind = getattr(value, "fmt", None) or str(value.dtype)
            print(f"  {name:10s} {kind:10s} {sum(int(a.nbytes) for a in jax.tree.leaves(value)) / 1e9:.3f} GB")
    total = sum(int(a.nbytes) for a in jax.tree.leaves(params))
    print(f"weights {total / 1e9:.3f} GB ({total} bytes)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    report_rss("start")
    start = time.perf_counter()
    model = load_model(args.path, weight_format="packed")
    jax.block_until_ready(jax.tree.leaves(model.params))
    print(f"load {time.perf_counter() - start:.1f} s", flush=True)
    report_rss("loaded")
    config, params = model.config, model.params
    del model
    pages = 3 + (args.context + args.steps + 2) // PAGE
    runner = Runner((config, params), page_size=PAGE, num_pages=pages, token_buckets=[MIN_TOKEN_BUCKET],
                    seq_buckets=[MIN_TOKEN_BUCKET])  # fmt: skip
    del params
    gc.collect()
    report_weights(runner.params)
    report_rss("runner built")
    start = time.perf_counter()
    runner.warmup()
    print(f"warmup {time.perf_counter() - start:.1f} s", flush=True)
    report_rss("warmed up")
    plans = iter(decode_plans(1, args.context, args.steps + 1, PAGE, 1))
    wall, cpu = median_time(lambda: runner.run(next(plans)), args.steps)
    print(f"decode b1 at context {args.context}: {wall:.3f} s/step wall, {cpu:.3f} s CPU (median of {args.steps})")
    report_rss("decoded")


if __name__ == "__main__":
    main()
