"""The runner's step with another checkout's model forward (A) vs this tree's (B), alternating in one process.

    git -C /path/to/main show HEAD:trellis_jax/model/forward.py > /tmp/forward_a.py
    python tools/bench_forward_ab.py /tmp/forward_a.py [bench_step options: --batches 1 8 --repeats 9 ...]

A is loaded from the given file under its own module name (it imports this tree's trellis_jax for everything
else) and swapped into runner/step.py while its Runner is built; both runners then take the same plans one
step of each in turn (tools/bench_step_compare.py's `alternate`), so load from neighbours hits both alike.
Compile time: each runner's warm-up (every bucket, forward + sampling), then `jit(forward).lower(...).compile()`
of one decode bucket with the caches cleared, A and B alternating `--compile-repeats` times. Also checks that
A and B give bitwise equal logits on that bucket.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time

import jax
import numpy as np
from bench_step import make_runner, parse_args
from bench_step_compare import alternate, compare_markdown

from trellis_jax.checkpoints import load_model
from trellis_jax.model import build_step_inputs, forward, init_kv_pages, sequential_page_tables
from trellis_jax.runner import step as runner_step


def load_forward(path: str):
    spec = importlib.util.spec_from_file_location("forward_a", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.forward


def compile_seconds(fwd, params, config, batch, page_size) -> tuple[float, float]:
    """(trace + lower seconds, XLA compile seconds) of one fresh jit of `fwd` on `batch`."""
    jax.clear_caches()
    kv = init_kv_pages(config, 1 + int(batch.page_table.size), page_size)
    jitted = jax.jit(fwd, static_argnames=("config",), donate_argnames=("kv",))
    start = time.perf_counter()
    lowered = jitted.lower(params, kv, batch, config=config)
    mid = time.perf_counter()
    lowered.compile()
    return mid - start, time.perf_counter() - mid


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    forward_a = load_forward(argv[0])
    args = parse_args(argv[1:])
    model = load_model(args.model, dtype=args.dtype)
    runners, warmups = {}, {}
    for name, fwd in (("A", forward_a), ("B", forward)):
        runner_step.forward = fwd  # make_step binds it when the Runner builds its steps
        runners[name] = make_runner(model, args)
        warmups[name] = runners[name].warmup(progress=False)
    runner_step.forward = forward
    results = alternate(runners, args)
    print(compare_markdown(results))
    print(f"\nwarm-up (compile every bucket) seconds: A {warmups['A']:.2f}, B {warmups['B']:.2f}")

    batch_size = max(args.batches)
    tables = sequential_page_tables([args.context + 1] * batch_size, args.page_size)
    batch = build_step_inputs(
        [[100 + b] for b in range(batch_size)], [args.context] * batch_size, tables, args.page_size
    )
    params, config = runners["B"].params, model.config
    times = {"A": [], "B": []}
    for _ in range(args.repeats):
        for name, fwd in (("A", forward_a), ("B", forward)):
            times[name].append(compile_seconds(fwd, params, config, batch, args.page_size))
    for name, samples in times.items():
        lower, xla = (statistics.median(s[i] for s in samples) for i in (0, 1))
        print(
            f"decode b{batch_size} forward: {name} trace+lower {lower:.2f} s, XLA compile {xla:.2f} s (median of {len(samples)})"
        )
    outputs = [
        jax.jit(fwd, static_argnames=("config",))(
            params, init_kv_pages(config, 1 + int(batch.page_table.size), args.page_size), batch, config=config
        )
        for fwd in (forward_a, forward)
    ]
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(outputs[0]), jax.tree.leaves(outputs[1])))
    print(f"A and B bitwise equal (logits and KV pages): {same}")


if __name__ == "__main__":
    main()
