"""The runner's host time per decode step with resident decode rows off and on, alternating in one run.

    PYTHONPATH=. .venv/bin/python tools/bench_resident.py                       # tiny preset, batch 1 and 32
    PYTHONPATH=. .venv/bin/python tools/bench_resident.py --model default --batches 8 --steps 20 --rounds 3

One runner (Runner.resident_state is switched between blocks: the compiled programs are the same). Each round
runs, for each batch and each setting, a block of 1 + --steps decode steps continuing the same sequences (every
row one token at position context + step, its pages growing as it crosses page boundaries); the first step of a
block is not timed (with resident rows on it is the one whose rows join). Per step:
  dispatch ms   wall time of Runner.dispatch: validate and pack (or compare with the resident rows), upload,
                enqueue the jitted step; the host's share of a step
  step ms       dispatch + collect (wait for the device, read the tokens back)
Printed: the median and the 10th percentile over every timed step of a setting, and each round's median
dispatch beside them (rounds alternate off/on, so a neighbour's load hits both alike).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_step import decode_plans, pages_for, report  # noqa: E402

from trellis_jax.checkpoints import load_model  # noqa: E402
from trellis_jax.runner import Runner  # noqa: E402


def block(runner: Runner, plans) -> tuple[list[float], list[float]]:
    """(dispatch seconds, step seconds) of plans[1:], after an untimed plans[0]."""
    runner.run(plans[0])
    dispatches, steps = [], []
    for plan in plans[1:]:
        start = time.perf_counter()
        launch = runner.dispatch(plan)
        dispatched = time.perf_counter()
        runner.collect(launch)
        dispatches.append(dispatched - start)
        steps.append(time.perf_counter() - start)
    return dispatches, steps


def bench(args) -> list[dict]:
    loaded = load_model(None if args.model == "default" else args.model)
    blocks = 2 * args.rounds
    longest = args.context + blocks * (args.steps + 1) + 1
    per_seq = pages_for(longest, args.page_size)
    runner = Runner(
        loaded,
        page_size=args.page_size,
        num_pages=2 + max(args.batches) * per_seq,
        token_buckets=sorted({max(2, b) for b in args.batches}),
        seq_buckets=sorted(set(args.batches)),
        max_context_len=longest,
    )
    runner.warmup(progress=False)
    rows = []
    for batch in args.batches:
        plans = decode_plans(batch, args.context, blocks * (args.steps + 1), args.page_size, 1)
        for r in range(args.rounds):
            for i, resident in enumerate((False, True)):
                first = (2 * r + i) * (args.steps + 1)
                runner.resident_state = resident
                dispatches, steps = block(runner, plans[first : first + args.steps + 1])
                rows.append(
                    {"batch": batch, "round": r, "resident": resident, "dispatch_s": dispatches, "step_s": steps}
                )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| batch | resident | dispatch ms | dispatch ms, 10th pct | step ms | step ms, 10th pct | dispatch ms per round |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for batch in dict.fromkeys(r["batch"] for r in rows):
        for resident in (False, True):
            group = [r for r in rows if r["batch"] == batch and r["resident"] == resident]
            dispatch = [x for r in group for x in r["dispatch_s"]]
            step = [x for r in group for x in r["step_s"]]
            per_round = ", ".join(f"{1000 * statistics.median(r['dispatch_s']):.3f}" for r in group)
            lines.append(
                f"| {batch} | {'on' if resident else 'off'} | {_ms(statistics.median(dispatch))} | "
                f"{_ms(_tenth(dispatch))} | {_ms(statistics.median(step))} | {_ms(_tenth(step))} | {per_round} |"
            )
    return "\n".join(lines)


def _tenth(values: list[float]) -> float:
    """The 10th percentile: on a shared machine the fast steps are the ones no neighbour slowed."""
    return statistics.quantiles(values, n=10)[0]


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.3f}"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-llama", help="preset, spec or 'default'")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--context", type=int, default=64, help="tokens of context at the first step")
    parser.add_argument("--steps", type=int, default=30, help="timed decode steps per block")
    parser.add_argument("--rounds", type=int, default=5, help="off/on block pairs per batch")
    parser.add_argument("--page-size", type=int, default=16)
    parser.add_argument("--json", default=None, help="also write every block here")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    rows = bench(args)
    report(rows, markdown(rows), args.json)


if __name__ == "__main__":
    main()
