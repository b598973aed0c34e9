"""Overload: N requests sent at once to a server with a small waiting queue (issue 20: "500 requests at
once -> 429 for the excess, zero 5xx, RSS bounded (reported)").

    .venv/bin/python tools/overload_test.py                       # the default model via `trellis-serve`
    .venv/bin/python tools/overload_test.py --fake                # tests/serve/fake_server_main.py (slow fake steps)

Starts the server as its own process on 127.0.0.1 (port 0, --max-num-seqs and --max-waiting-requests
small), waits for /health, sends one warm-up request, then fires --requests non-streaming chat requests
at once over as many connections. Counts the statuses; checks every 429 carries Retry-After and an
OpenAI rate_limit_error body; samples the server's RSS (/proc/PID/status) every 20 ms during the burst
and reads its VmHWM (peak over its life, loading included); sends one request after the burst (slots
must have come back); SIGTERMs the server (it must exit 0). Prints the summary as JSON (--out: a file).
Exit status 0 when: zero 5xx and connection errors, only 200s and 429s, 429s well formed, server exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
URL = re.compile(r"http://127\.0\.0\.1:\d+")


def server_command(args) -> list[str]:
    if args.fake:
        main = os.path.join(ROOT, "tests", "serve", "fake_server_main.py")
        return [sys.executable, main, str(args.fake_step_s), str(args.max_waiting_requests), str(args.max_num_seqs)]
    return [
        sys.executable, "-m", "trellis_jax.serve", "--port", "0", "--log-level", "warning",
        "--max-num-seqs", str(args.max_num_seqs), "--max-waiting-requests", str(args.max_waiting_requests),
        "--max-model-len", "512", *args.server_arg,
    ]  # fmt: skip


def start(args) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(server_command(args), stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    for line in proc.stdout:
        found = URL.search(line)
        if found:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain the rest
            return proc, found.group(0)
    raise RuntimeError(f"the server exited ({proc.wait()}) before printing its URL")


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} while loading")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return time.perf_counter() - start
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server was not ready within {timeout_s} s")


class RssSampler:
    """The peak of VmRSS seen every `interval_s` while running (kB)."""

    def __init__(self, pid: int, interval_s: float = 0.02):
        self.pid, self.interval_s, self.peak_kb = pid, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, status_kb(self.pid, "VmRSS"))
            time.sleep(self.interval_s)


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def body(model: str, max_tokens: int, i: int) -> dict:
    question = f"Request {i}: name a colour."
    return {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
            "temperature": 0}  # fmt: skip


async def burst(url: str, model: str, count: int, max_tokens: int, timeout_s: float) -> list:
    limits = httpx.Limits(max_connections=count + 8, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:

        async def one(i: int):
            try:
                return await client.post("/v1/chat/completions", json=body(model, max_tokens, i))
            except httpx.TransportError as error:
                return error

        return await asyncio.gather(*(one(i) for i in range(count)))


def well_formed_429(response: httpx.Response) -> bool:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError):
        return False
    return int(response.headers.get("retry-after", "0")) >= 1 and error.get("type") == "rate_limit_error"


def summarise(results: list, elapsed_s: float) -> dict:
    statuses = [r.status_code for r in results if isinstance(r, httpx.Response)]
    refused = [r for r in results if isinstance(r, httpx.Response) and r.status_code == 429]
    return {
        "requests": len(results),
        "status_200": statuses.count(200),
        "status_429": len(refused),
        "status_other_4xx": sum(400 <= s < 500 and s != 429 for s in statuses),
        "status_5xx": sum(s >= 500 for s in statuses),
        "connection_errors": sum(not isinstance(r, httpx.Response) for r in results),
        "malformed_429": sum(not well_formed_429(r) for r in refused),
        "burst_wall_s": round(elapsed_s, 2),
    }


def run(args) -> dict:
    proc, url = start(args)
    try:
        ready_s = wait_ready(url, proc, args.ready_timeout)
        model = httpx.get(url + "/v1/models", timeout=30).json()["data"][0]["id"]
        warm = httpx.post(url + "/v1/chat/completions", json=body(model, args.max_tokens, -1), timeout=600)
        rss_before = status_kb(proc.pid, "VmRSS")
        with RssSampler(proc.pid) as sampler:
            start_t = time.perf_counter()
            results = asyncio.run(burst(url, model, args.requests, args.max_tokens, args.timeout))
            elapsed = time.perf_counter() - start_t
        after = httpx.post(url + "/v1/chat/completions", json=body(model, args.max_tokens, -2), timeout=600)
        summary = summarise(results, elapsed)
        summary.update(
            server=" ".join(server_command(args)[1:]),
            model=model,
            ready_s=round(ready_s, 1),
            warmup_status=warm.status_code,
            after_burst_status=after.status_code,
            rss_before_burst_mib=round(rss_before / 1024, 1),
            rss_peak_during_burst_mib=round(sampler.peak_kb / 1024, 1),
            rss_hwm_lifetime_mib=round(status_kb(proc.pid, "VmHWM") / 1024, 1),
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    summary["server_exit_code"] = code
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fake", action="store_true", help="the fake engine (tests/serve/fake_server_main.py)")
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--max-num-seqs", type=int, default=8)
    p.add_argument("--max-waiting-requests", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--fake-step-s", type=float, default=0.05, help="seconds per fake engine step")
    p.add_argument("--timeout", type=float, default=600.0, help="per-request HTTP timeout")
    p.add_argument("--ready-timeout", type=float, default=1200.0, help="seconds the server may take to load")
    p.add_argument("--server-arg", action="append", default=[], help="extra trellis-serve argument (repeatable)")
    p.add_argument("--out", default=None, help="write the JSON summary here too")
    args = p.parse_args(argv)
    if not 1 <= args.requests <= 510:
        p.error("--requests must be in [1, 510] (the server holds at most --limit-concurrency 512 connections)")
    summary = run(args)
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    ok = (
        summary["status_5xx"] == summary["connection_errors"] == summary["status_other_4xx"] == 0
        and summary["malformed_429"] == 0
        and summary["server_exit_code"] == 0
        and summary["after_burst_status"] == 200
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
