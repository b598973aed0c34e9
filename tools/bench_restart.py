"""Warm-restart benchmark: first-request TTFT of a shared-system request on a --kv-cache-dir, these ways:

    cold          a fresh process on an empty directory (the whole prompt is prefilled)
    warm          the same process, the same request a second time (the device pool holds the prefix)
    clean         a process that served the request and stopped cleanly (Engine.close), then a fresh one on
                  its dir, whose request comes once the restart's prefetch is done (a server that is up)
    clean-at-once the same directory, a fresh process whose request comes right after the build (prefetch on,
                  not waited for: what a request racing the prefetch sees)
    clean-off     the same directory, a fresh process with --kv-prefetch 0 (the request reloads the pages)
    kill9         a process that served the request, went idle (its checkpoint), was SIGKILLed after --idle-s,
                  then a fresh one on its dir (prefetch waited for, as clean)
    kill9-off     the same directory, --kv-prefetch 0

Every engine runs in its own child process (this tool with --child), one scenario after the other, the
rounds interleaved (cold+warm, clean..., kill9..., cold+warm, ...), so a loaded machine's drift hits each alike.
TTFT: wall time from add_request to the first step that returns a token (sync Engine, after the build and
its compiles, and after the prefetch where it is waited for; token buckets 16/128/512). Reports each run, the
prefetch's own time after the build, the medians, and checks the outputs of every way are the same tokens.

Usage: python tools/bench_restart.py [--model PATH] [--system-tokens 512] [--rounds 2] [--idle-s 1]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time

QUESTION_TOKENS = 16
SHOWN = ("ttft", "hit_tokens", "prefetched", "prefetch_s")
BUCKETS = (16, 128, 512)  # few programs: each child compiles its own (TTFT is timed after the compiles)


def request(vocab: int, system_tokens: int) -> list[int]:
    rng, top = random.Random(0), min(vocab, 30000)
    return [rng.randrange(10, top) for _ in range(system_tokens + QUESTION_TOKENS)]


def timed(engine, request_id: str, prompt: list[int]) -> tuple[float, list[int]]:
    """TTFT of one greedy request and its tokens (it runs to its end)."""
    from trellis_jax.engine.api import SamplingParams

    engine.add_request(request_id, prompt, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    start, ttft, tokens = time.perf_counter(), None, []
    while engine.has_unfinished():
        for delta in engine.step():
            if delta.token_ids and ttft is None:
                ttft = time.perf_counter() - start
            tokens += delta.token_ids
    return ttft, tokens


def child(args) -> None:
    """One engine process: --child serve|measure|measure-twice; prints one JSON line per measurement."""
    from trellis_jax.cli import default_compile_cache_dir
    from trellis_jax.engine.api import EngineConfig
    from trellis_jax.engine.builder import build_engine

    config = EngineConfig(
        model=args.model,
        kv_cache_dir=args.dir,
        token_buckets=BUCKETS,
        seq_buckets=(1, 2),
        kv_prefetch=0.0 if args.prefetch == "off" else 0.5,
        compile_cache_dir=default_compile_cache_dir(),  # children start sooner; TTFT is timed after the build
    )
    engine, tokenizer = build_engine(config)
    prompt = request(tokenizer.vocab_size, args.system_tokens)
    start = time.perf_counter()
    if args.prefetch == "on":
        engine.wait_prefetch()
    prefetch_s = time.perf_counter() - start
    ttft, tokens = timed(engine, "first", prompt)
    counters = engine.tier_stats()["counters"]
    line = {"ttft": ttft, "tokens": tokens, "hit_tokens": counters.hit_tokens, "prefetch_s": prefetch_s}
    print(json.dumps({**line, "prefetched": counters.prefetched_pages}), flush=True)
    if args.child == "measure-twice":
        ttft, tokens = timed(engine, "again", prompt)
        print(json.dumps({"ttft": ttft, "tokens": tokens}), flush=True)
    if args.child == "serve-close":
        engine.close()
    if args.child == "serve-idle":
        engine.checkpoint()  # what the server's idle turn does
        print(json.dumps({"idle": True}), flush=True)
        time.sleep(3600)


def run_child(args, role: str, directory: str, kill_after_idle: bool = False, prefetch: str = "on") -> list[dict]:
    command = [
        sys.executable,
        __file__,
        "--child",
        role,
        "--dir",
        directory,
        "--system-tokens",
        str(args.system_tokens),
        "--prefetch",
        prefetch,
    ]
    if args.model:
        command += ["--model", args.model]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(json.loads(line))
        if kill_after_idle and lines[-1].get("idle"):
            time.sleep(args.idle_s)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    return lines


def round_once(args) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as d:
        cold, warm = run_child(args, "measure-twice", d)
        out["cold"], out["warm"] = cold, warm
    with tempfile.TemporaryDirectory() as d:  # a measuring child leaves the directory's pages as they were
        run_child(args, "serve-close", d)
        out["clean"] = run_child(args, "measure", d)[0]
        out["clean-at-once"] = run_child(args, "measure", d, prefetch="at-once")[0]
        out["clean-off"] = run_child(args, "measure", d, prefetch="off")[0]
    with tempfile.TemporaryDirectory() as d:
        run_child(args, "serve-idle", d, kill_after_idle=True)
        out["kill9"] = run_child(args, "measure", d)[0]
        out["kill9-off"] = run_child(args, "measure", d, prefetch="off")[0]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--system-tokens", type=int, default=512)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--idle-s", type=float, default=1.0, help="kill9: seconds idle after the checkpoint")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--prefetch", default="on", choices=("on", "at-once", "off"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    runs = []
    for r in range(args.rounds):
        runs.append(round_once(args))
        print(json.dumps({"round": r, **{k: {key: v.get(key) for key in SHOWN} for k, v in runs[-1].items()}}))
    ways = ("cold", "warm", "clean", "clean-at-once", "clean-off", "kill9", "kill9-off")
    same = all(run[w]["tokens"] == runs[0]["cold"]["tokens"] for run in runs for w in ways)
    med = {w: statistics.median(run[w]["ttft"] for run in runs) for w in ways}
    print(f"outputs identical to cold: {same}")
    for w in ways:
        print(
            f"{w:13s} median TTFT {med[w] * 1000:8.1f} ms   vs warm {med[w] / med['warm']:5.2f}x   cold/this {med['cold'] / med[w]:5.1f}x"
        )
    waited = [run[w]["prefetch_s"] for run in runs for w in ("clean", "kill9")]
    print(f"prefetch after the build (clean, kill9): median {statistics.median(waited) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
