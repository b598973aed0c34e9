"""Decode at batch B through the whole engine against the bare runner step, alternated step by step in one run.

    PYTHONPATH=. .venv/bin/python tools/bench_engine_gap.py                # default model, Q4_1 packed, batch 1
    PYTHONPATH=. .venv/bin/python tools/bench_engine_gap.py --batches 1 8 --steps 32 --rounds 3
    PYTHONPATH=. .venv/bin/python tools/bench_engine_gap.py \\
        --variant 'min8={"token_buckets": [8, 16, 32, 64, 128, 160, 192, 224, 256, 320, 384, 448, 512]}'

Systems, all over one loaded model (--model, --dtype, --weight-format; default: the default model's GGUF, float32
activations, weights packed):
  bare         a Runner built the way tools/bench_step.py builds one (a single decode bucket of max(2, B) rows),
               running one decode plan per step with every row at the prompt's length + step: the step alone;
  engine       the engine as `LLM(...)` builds it from the defaults (radix cache off, 64 MiB of KV);
  each `--variant NAME=JSON` another engine with those EngineConfig options on top of the engine's (its own
               runner: an engine owns its runner's KV). Options that change the loaded weights are refused.
Each round, every engine takes B greedy requests on the same --prompt-tokens prompt (EOS ignored) and steps
until each has its first token; then the systems step in turn (the order rotates each step, so a neighbour's
load falls on all alike), each until it has made --steps tokens per request (an engine with decode_steps=k
takes ~1/k as many steps), and the requests are run to their end untimed.
Printed per batch and system: tok/s (tokens over the wall seconds of its timed steps), its ratio to bare, the
median step in wall ms, the process CPU ms per token (less disturbed than wall time by other jobs on a shared
machine), and the buckets its steps ran in (the last round's).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import statistics
import time
from pathlib import Path

from trellis_jax.engine.api import EngineConfig, SamplingParams
from trellis_jax.engine.builder import build_engine, load_for
from trellis_jax.engine.flags import default_compile_cache_dir
from trellis_jax.runner import Runner
from trellis_jax.runner.runner import MIN_TOKEN_BUCKET
from trellis_jax.step_plan import SequenceWork, StepPlan

LOAD_OPTIONS = ("model", "dtype", "weight_format", "quantization", "tensor_parallel_size")
RESERVED = ("bare", "engine")  # the systems every run has


class EngineSystem:
    """One engine and its B requests; step() runs one engine step and records the bucket it ran in."""

    def __init__(self, config: EngineConfig, loaded) -> None:
        self.engine, _ = build_engine(config, loaded=loaded)
        self.buckets: collections.Counter = collections.Counter()
        self.rounds = 0
        dispatch = self.engine.runner.dispatch

        def recording_dispatch(plan):
            launch = dispatch(plan)
            self.buckets[launch.packed.bucket] += 1
            return launch

        self.engine.runner.dispatch = recording_dispatch  # run() goes through dispatch too

    def start(self, prompt: list[int], batch: int, steps: int) -> None:
        """Queue the requests and step until each has its first token (prefill done, decoding from here)."""
        self.rounds += 1
        sampling = SamplingParams(temperature=0.0, max_tokens=steps + 33, ignore_eos=True)  # room for k <= 32 extra
        waiting = {f"r{self.rounds}-{b}" for b in range(batch)}
        for request_id in sorted(waiting):
            self.engine.add_request(request_id, prompt, sampling)
        while waiting:
            waiting -= {d.request_id for d in self.engine.step() if d.token_ids}
        self.buckets.clear()

    def step(self) -> int:
        """One engine step; -> the tokens it delivered (k per row for a multi-step decode step)."""
        return sum(len(delta.token_ids) for delta in self.engine.step())

    def finish(self) -> None:
        while self.engine.has_unfinished():
            self.engine.step()
        self.engine.pop_finished()

    def bucket(self) -> str:
        return ", ".join(f"{tuple(b)} x{n}" for b, n in self.buckets.most_common())


class BareSystem:
    """The bare step: decode plans straight into a Runner with one decode bucket, as tools/bench_step.py."""

    def __init__(self, loaded, batch: int, context: int, steps: int, page_size: int = 16) -> None:
        rows = max(MIN_TOKEN_BUCKET, batch)
        per_seq = -(-(context + steps + 2) // page_size)
        self.runner = Runner(
            loaded,
            page_size=page_size,
            num_pages=1 + batch * per_seq,
            token_buckets=(rows,),
            seq_buckets=(rows,),
            compile_cache_dir=default_compile_cache_dir(),
        )
        self.runner.warmup(progress=False)
        tables = [list(range(1 + b * per_seq, 1 + (b + 1) * per_seq)) for b in range(batch)]
        self.plans = [
            StepPlan([SequenceWork(f"d{b}", [100 + b], context + s, tables[b], True, rng_step=s) for b in range(batch)])
            for s in range(steps + 1)
        ]
        self.index = 0

    def start(self, prompt: list[int], batch: int, steps: int) -> None:
        """Later rounds go on from the last round's positions; the first runs one untimed step."""
        if self.index == 0:
            self.runner.run(self.plans[0])
            self.index = 1

    def step(self) -> int:
        plan = self.plans[self.index]
        self.runner.run(plan)
        self.index += 1
        return len(plan.sequences)

    def finish(self) -> None:
        pass

    def bucket(self) -> str:
        return str(tuple(self.runner.compiled_buckets[0]))


def parse_variant(text: str) -> tuple[str, dict]:
    """NAME=JSON -> (name, EngineConfig options); argparse.ArgumentTypeError for what cannot be timed here."""
    name, sep, body = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--variant takes NAME=JSON, got {text!r}")
    if name in RESERVED:
        raise argparse.ArgumentTypeError(f"--variant {name}: {RESERVED} are taken")
    try:
        options = json.loads(body)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--variant {name}: bad JSON ({error})") from None
    if not isinstance(options, dict):
        raise argparse.ArgumentTypeError(f"--variant {name}: JSON must be an object of EngineConfig options")
    if options.get("overlap"):  # its step n runs on during the next system's turn: no per-system time to take
        raise argparse.ArgumentTypeError(f"--variant {name}: an overlapped engine cannot be timed step by step")
    refused = sorted(set(options) & set(LOAD_OPTIONS))
    if refused:
        raise argparse.ArgumentTypeError(f"--variant {name}: {refused} change the loaded weights; give them once")
    return name, {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}


def base_config(args) -> EngineConfig:
    return EngineConfig(
        model=args.model,
        dtype=args.dtype,
        weight_format=args.weight_format,
        kv_memory="64MiB",
        disable_radix_cache=True,
        compile_cache_dir=default_compile_cache_dir(),
    )


def measure(systems: dict, prompt: list[int], batch: int, args) -> dict:
    """{system: (wall seconds, cpu seconds, tokens) per timed step} over every round: one step of each system
    not done yet in turn, until each has made --steps tokens per request."""
    timings = {name: ([], [], []) for name in systems}
    order = list(systems.items())
    for _ in range(args.rounds):
        for system in systems.values():
            system.start(prompt, batch, args.steps)
        made = dict.fromkeys(systems, 0)
        for i in itertools.count():
            todo = [
                (n, s) for n, s in order[i % len(order) :] + order[: i % len(order)] if made[n] < args.steps * batch
            ]
            if not todo:
                break
            for name, system in todo:
                wall, cpu = time.perf_counter(), time.process_time()
                tokens = system.step()
                walls, cpus, counts = timings[name]
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
                counts.append(tokens)
                made[name] += tokens
        for system in systems.values():
            system.finish()
    return timings


def report(batch: int, timings: dict, systems: dict) -> list[str]:
    def rate(name: str) -> float:
        walls, _, counts = timings[name]
        return sum(counts) / sum(walls)

    lines = [
        f"batch {batch}:",
        "| system | tok/s | / bare | step ms (wall, median) | CPU ms per token | decode bucket (T, S, P) x steps |",
        "|---|---|---|---|---|---|",
    ]
    for name, (walls, cpus, counts) in timings.items():
        lines.append(
            f"| {name} | {rate(name):.1f} | {rate(name) / rate('bare'):.2f} | {1000 * statistics.median(walls):.1f} | "
            f"{1000 * sum(cpus) / sum(counts):.1f} | {systems[name].bucket()} |"
        )
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model spec (default: the default model's GGUF)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--weight-format", default="packed")
    p.add_argument("--batches", type=int, nargs="+", default=[1])
    p.add_argument("--steps", type=int, default=32, help="timed decode tokens per request and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--variant", type=parse_variant, action="append", default=[], help="NAME=JSON engine options")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if min(args.batches) < 1 or args.steps < 1 or args.rounds < 1 or args.prompt_tokens < 1:
        p.error("--batches, --steps, --rounds and --prompt-tokens must be >= 1")
    names = [name for name, _ in args.variant]
    if len(set(names)) != len(names):
        p.error(f"--variant names must differ, got {names}")
    for name, options in args.variant:  # a bad option stops the run before the model loads
        try:
            EngineConfig.from_options(**{**base_config(args).__dict__, **options})
        except (TypeError, ValueError) as error:
            p.error(f"--variant {name}: {error}")
    loaded = load_for(base_config(args))
    prompt = [100 + (7 * i) % 900 for i in range(args.prompt_tokens)]
    engines = {"engine": EngineSystem(base_config(args), loaded)}
    for name, options in args.variant:
        engines[name] = EngineSystem(EngineConfig(**{**base_config(args).__dict__, **options}), loaded)
    results, lines = {}, []
    for batch in args.batches:
        systems = {"bare": BareSystem(loaded, batch, args.prompt_tokens, args.rounds * args.steps + 1)} | engines
        timings = measure(systems, prompt, batch, args)
        results[batch] = {name: {"wall_s": w, "cpu_s": c, "tokens": n} for name, (w, c, n) in timings.items()}
        lines += report(batch, timings, systems) + [""]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
