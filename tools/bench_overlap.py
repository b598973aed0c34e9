"""The overlapped engine loop against the synchronous one, and multi-step decode (--decode-steps k), side by
side in one run (one runner per model).

    PYTHONPATH=. .venv/bin/python tools/bench_overlap.py                      # tiny preset + default model
    PYTHONPATH=. .venv/bin/python tools/bench_overlap.py --models tiny-llama --batches 1 --steps 8   # smoke
    PYTHONPATH=. .venv/bin/python tools/bench_overlap.py --overlap off --decode-steps 1 4 8 16   # multi-step
    PYTHONPATH=. .venv/bin/python tools/bench_overlap.py --resident off on     # resident decode rows A/B

For each model, batch size, loop (overlap off / on) and k (decode steps per device call), a fresh engine
decodes `batch` greedy requests of max_tokens 1 + `--steps`; once every request has its first token, the
rest of the run is timed (`--steps` tokens per request: with k = 1 that many engine steps). Printed per row:
  steps/s        engine steps per wall second;
  tok/s          output tokens per wall second, all requests together;
  host ms/step   wall time inside Engine.step() not spent waiting for the device (schedule, pack, encode,
                 dispatch, read-back, commit, detokenize), per engine step;
  host us/tok    the same, per output token;
  idle %         the device's idle share: sum over steps of (dispatch of step n+1 - completion of step n, when
                 positive) over (completion of the last step - dispatch of the first). Completion is stamped
                 by a thread blocked on each step's sampled tokens, dispatch when runner.dispatch returns.
Both loops take turns on one runner per model (identical compiled programs); rows alternate off/on. With
`--resident off on` each cell also runs with the runner's resident decode rows off and on (Runner.resident_state,
the same programs), alternating within every round.
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_step import report  # noqa: E402

from trellis_jax.engine.api import EngineConfig, SamplingParams  # noqa: E402
from trellis_jax.engine.builder import build_engine, make_runner  # noqa: E402
from trellis_jax.engine.flags import default_compile_cache_dir  # noqa: E402


class Timeline:
    """Dispatch and completion stamps of every step, and the time Engine.step() spent waiting for one."""

    def __init__(self) -> None:
        self.dispatched: list[float] = []
        self.completed: dict[int, float] = {}
        self.waited = 0.0
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            index, array = self._queue.get()
            array.block_until_ready()
            self.completed[index] = time.perf_counter()

    def on_dispatch(self, launch) -> None:
        self.dispatched.append(time.perf_counter())
        self._queue.put((len(self.dispatched) - 1, launch.outputs.token_ids))

    def settle(self) -> None:
        """Wait until every dispatched step has its completion stamp."""
        while len(self.completed) < len(self.dispatched):
            time.sleep(0.001)

    def reset(self) -> None:
        self.settle()
        self.dispatched, self.completed, self.waited = [], {}, 0.0

    def idle_share(self) -> float:
        self.settle()
        gaps = [max(0.0, self.dispatched[n + 1] - self.completed[n]) for n in range(len(self.dispatched) - 1)]
        span = self.completed[len(self.dispatched) - 1] - self.dispatched[0]
        return sum(gaps) / span if span > 0 else 0.0


class TimedRunner:
    """The runner with dispatch stamped and the wait inside collect measured; everything else delegated."""

    def __init__(self, runner, timeline: Timeline) -> None:
        self._runner, self.timeline = runner, timeline

    def __getattr__(self, name):
        return getattr(self._runner, name)

    def dispatch(self, plan):
        launch = self._runner.dispatch(plan)
        self.timeline.on_dispatch(launch)
        return launch

    def collect(self, launch):
        start = time.perf_counter()
        launch.outputs.token_ids.block_until_ready()
        self.timeline.waited += time.perf_counter() - start
        return self._runner.collect(launch)

    def run(self, plan):
        return self.collect(self.dispatch(plan))


def measure(config: EngineConfig, loaded, runner, batch: int, steps: int, prompt_len: int) -> dict:
    timeline = Timeline()
    engine, _ = build_engine(config, loaded, TimedRunner(runner, timeline))
    params = SamplingParams(temperature=0, max_tokens=1 + steps, ignore_eos=True)
    for i in range(batch):
        engine.add_request(f"r{i}", [(7 * i + j) % 200 + 10 for j in range(prompt_len)], params)
    started: set[str] = set()
    while len(started) < batch:  # prefill until every request decodes
        started.update(d.request_id for d in engine.step() if d.token_ids)
    timeline.reset()
    start, num_steps, tokens = time.perf_counter(), 0, 0
    while engine.has_unfinished():  # every request's remaining tokens
        tokens += sum(len(d.token_ids) for d in engine.step())
        num_steps += 1
    wall = time.perf_counter() - start
    host = wall - timeline.waited
    return {
        "steps_per_s": num_steps / wall,
        "tokens_per_s": tokens / wall,
        "host_ms_per_step": 1000 * host / num_steps,
        "host_us_per_token": 1e6 * host / max(tokens, 1),
        "idle_share": timeline.idle_share(),
    }


def bench(args) -> list[dict]:
    from trellis_jax.checkpoints import load_model

    rows = []
    for model in args.models:
        loaded = load_model(None if model == "default" else model)
        base = EngineConfig(
            max_num_seqs=max(args.batches),
            max_num_batched_tokens=max(64, max(args.batches) * args.prompt_len),
            token_buckets=tuple(sorted({2, 8, 32, max(args.batches) * args.prompt_len})),
            disable_radix_cache=True,
            compile_cache_dir=default_compile_cache_dir(),
        )
        runner = make_runner(base, loaded)
        for k in args.decode_steps:
            runner.warmup(progress=False, decode_steps=k)  # every k's programs before anything is timed
        for batch in args.batches:
            for _ in range(args.rounds):
                for overlap in [_OVERLAP[o] for o in args.overlap]:
                    for k in args.decode_steps:
                        for resident in [_OVERLAP[r] for r in args.resident]:
                            runner.resident_state = resident
                            config = EngineConfig(**{**base.__dict__, "overlap": overlap, "decode_steps": k})
                            result = measure(config, loaded, runner, batch, args.steps, args.prompt_len)
                            rows.append(
                                {"model": model, "batch": batch, "overlap": overlap, "k": k, "resident": resident}
                                | result
                            )
    return rows


_OVERLAP = {"off": False, "on": True}
_METRICS = ("steps_per_s", "tokens_per_s", "host_ms_per_step", "host_us_per_token", "idle_share")


def summarise(rows: list[dict]) -> list[dict]:
    """The median of each (model, batch, overlap, k) over its rounds, in the order they first ran."""
    names = ("model", "batch", "overlap", "k", "resident")
    keys = list(dict.fromkeys(tuple(r[n] for n in names) for r in rows))
    out = []
    for key in keys:
        group = [r for r in rows if tuple(r[n] for n in names) == key]
        out.append(
            {
                **dict(zip(names, key)),
                **{m: statistics.median(r[m] for r in group) for m in _METRICS},
            }
        )
    return out


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | batch | overlap | k | resident | steps/s | tok/s | host ms/step | host us/tok | device idle |",
        "|---|---:|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch']} | {'on' if r['overlap'] else 'off'} | {r['k']} "
            f"| {'on' if r['resident'] else 'off'} | {r['steps_per_s']:.1f} "
            f"| {r['tokens_per_s']:.1f} | {r['host_ms_per_step']:.2f} | {r['host_us_per_token']:.0f} "
            f"| {100 * r['idle_share']:.1f} % |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny-llama", "default"], help="presets, specs or 'default'")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--steps", type=int, default=40, help="timed tokens per request (k = 1: engine steps)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over every loop and k (median reported)")
    parser.add_argument("--overlap", nargs="+", choices=sorted(_OVERLAP), default=["off", "on"], help="loops to run")
    parser.add_argument("--decode-steps", type=int, nargs="+", default=[1], help="k values (multi-step decode)")
    parser.add_argument(
        "--resident", nargs="+", choices=sorted(_OVERLAP), default=["on"], help="resident decode rows (A/B)"
    )
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--json", default=None, help="also write every row here")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    rows = bench(args)
    report(rows, markdown(summarise(rows)), args.json)


if __name__ == "__main__":
    main()
