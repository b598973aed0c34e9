"""Start-up time of the three commands, warm caches, several source trees side by side (docs/benchmarks/startup.md).

    python tools/bench_startup.py [--tree NAME=PATH ...] [--rounds 3] [--only generate,batch,serve,first]
                                  [--cache-root DIR] [--port 8137] [--kv-memory 2GiB]

For each round and each tree in turn (interleaved, so a busy machine slows every tree alike), it times:
  generate  `python -m trellis_jax.generate --chat --max-tokens 1`: process start -> first token printed
            (the process exits right after it);
  batch     `python -m trellis_jax.batch` on one request of one token: process start -> the job's exit;
  serve     `python -m trellis_jax.serve`: process start -> GET /health answers 200; it notes whether /health
            answered 503 before (it should while the engine loads).
  first     the same server: process start -> the reply to one /v1/completions request of one token, sent once
            /health answers 200 (what a healthy server still had to do before it can answer shows up here).
Besides the wall time it records the CPU time (user + system) the command's process used: on a shared machine
the wall time includes waiting for a core, the CPU time much less so. Each tree runs with PYTHONPATH=PATH and
its own cache directory (XDG_CACHE_HOME=<root>/<name>,
<root> a fresh temporary folder, or --cache-root DIR to keep and reuse caches between invocations), warmed by one
untimed run of each command first. --kv-memory fixes the batch job's and the server's KV pool (by default it follows
the host's free RAM, and another pool shape means other programs to load or compile). Prints the median and
the range per tree and command (--only defaults to the first three).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

PROMPT = "What is the capital of France?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH (default: this tree as 'this')")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="generate,batch,serve")
    parser.add_argument("--port", type=int, default=8137)
    parser.add_argument("--kv-memory", default=None, help="the batch job's and server's KV pool size")
    parser.add_argument("--cache-root", default=None, help="per-tree cache folders DIR/NAME (default: a fresh temp)")
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree) or {"this": os.getcwd()}
    commands = args.only.split(",")
    work = tempfile.mkdtemp(prefix="startup-")
    caches = args.cache_root or work
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for round_ in range(args.rounds + 1):  # round 0 warms the caches, untimed
        for name, path in trees.items():
            env = {**os.environ, "PYTHONPATH": path, "XDG_CACHE_HOME": os.path.join(caches, name)}
            for command in commands:
                before = _children_cpu()
                seconds = RUNNERS[command](env, work, args.port, _kv_flags(args.kv_memory, command))
                cpu = _children_cpu() - before
                label = "warm-up" if round_ == 0 else f"round {round_}"
                print(f"{label:8s} {name:12s} {command:9s} wall {seconds:6.2f} s  cpu {cpu:6.2f} s", flush=True)
                if round_:
                    times.setdefault((name, command), []).append((seconds, cpu))
    print("\ntree          command   wall: median   min    max   cpu: median   min    max   (s)")
    for (name, command), values in times.items():
        wall, cpu = [v[0] for v in values], [v[1] for v in values]
        print(
            f"{name:12s}  {command:9s}       {statistics.median(wall):6.2f} {min(wall):6.2f} {max(wall):6.2f}"
            f"        {statistics.median(cpu):6.2f} {min(cpu):6.2f} {max(cpu):6.2f}"
        )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _kv_flags(kv_memory: str | None, command: str) -> list[str]:
    """--kv-memory for the engine commands (generate sizes its own pool to the prompt)."""
    return ["--kv-memory", kv_memory] if kv_memory and command != "generate" else []  # batch, serve, first


def time_generate(env, work, port, extra) -> float:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "trellis_jax.generate", "--prompt", PROMPT, "--chat", "--max-tokens", "1", *extra]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def time_batch(env, work, port, extra) -> float:
    source = os.path.join(work, "requests.jsonl")
    with open(source, "w") as f:
        f.write(json.dumps({"id": 1, "prompt": PROMPT, "max_tokens": 1}) + "\n")
    output = os.path.join(work, "results.jsonl")
    if os.path.exists(output):
        os.remove(output)
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "trellis_jax.batch", "--input", source, "--output", output, *extra]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def time_serve(env, work, port, extra, first_request: bool = False) -> float:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "trellis_jax.serve", "--port", str(port), *extra]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        loading = _wait_healthy(server, port, start)
        print(f"  /health: 503 first seen at {loading} s" if loading else "  /health: no 503 seen")
        if first_request:
            _complete(port)
        return time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=60)


def _wait_healthy(server, port: int, start: float) -> float | None:
    """Poll /health until it answers 200; -> when it first answered 503 (None: never)."""
    loading = None
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
                if reply.status == 200:
                    return loading
        except urllib.error.HTTPError as error:
            if error.code == 503 and loading is None:
                loading = round(time.perf_counter() - start, 2)
        except OSError:  # not listening yet
            pass
        time.sleep(0.05)


def _complete(port: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=60) as reply:
        model = json.load(reply)["data"][0]["id"]
    body = json.dumps({"model": model, "prompt": PROMPT, "max_tokens": 1}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as reply:
        if reply.status != 200:
            raise RuntimeError(f"/v1/completions answered {reply.status}")


def time_first(env, work, port, extra) -> float:
    return time_serve(env, work, port, extra, first_request=True)


RUNNERS = {"generate": time_generate, "batch": time_batch, "serve": time_serve, "first": time_first}

if __name__ == "__main__":
    main()
