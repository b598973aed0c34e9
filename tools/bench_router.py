"""Replicas behind the router on a multi-tenant workload (issue 25): cached-token share, and a replica killed.

    .venv/bin/python tools/bench_router.py                      # hit rate: cache_aware vs round_robin vs one big engine
    .venv/bin/python tools/bench_router.py --scenario failure   # a replica SIGKILLed mid-run, then restarted
    .venv/bin/python tools/bench_router.py --model tiny-llama --kv-memory 1280KiB   # real servers, tiny model

Workers: by default the server over the fake engine (`bench_router.py worker`: the real scheduler and radix
cache, the FakeRunner, a byte tokenizer; its cached-token counts are the cache's real ones), each with
`--pages` KV pages of `--page-size` tokens; with --model, `trellis-serve --model M --kv-memory X`. The router
(`python -m trellis_jax.router`, prompts keyed by characters) runs as its own process, as do the workers.

Hit rate: 8 system prompts (`--prompt-chars` each, distinct from the first character) x `--questions`
questions, interleaved in a seeded random order, sent as chat completions (max_tokens 2) with
`--concurrency` in flight, to (a) `--replicas` fresh workers behind the router with cache_aware, (b) the same
with round_robin, (c) one worker with `--replicas` x the KV pages (one big engine). Reported: the share of
prompt tokens served from cache (usage.prompt_tokens_details.cached_tokens / prompt_tokens).

Failure: chat completions, every other one streamed (`--stream-tokens` tokens, the fake engine slowed to `--step-s` per step)
with `--concurrency` in flight; after `--kill-after` seconds worker 0 is SIGKILLed, `--restart-after` seconds
later it is started again on its port. Reported: outcomes (streams: ok, cut after they had started, each of
which must end with an error event then [DONE], or failed before starting, which must not happen;
non-streamed: whole_ok or whole_failed, which must not happen: nothing had reached the client, so the router
retries them), the router's retries, and how long after the restart the router had the worker back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "fake-model"  # with --model: set from it in main()
WORDS = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega river stone cloud field light".split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_worker(args) -> int:
    """A server over the fake engine (`bench_router.py worker --port P --pages N`), until SIGTERM."""
    sys.path[:0] = [ROOT]
    from trellis_jax.engine.api import AsyncEngine
    from trellis_jax.http_server import bind_socket, serve
    from trellis_jax.serve.app import ServerSettings, create_app
    from trellis_testing.fakes import make_fake_engine

    engine, runner, _cache, tokenizer = make_fake_engine(
        num_pages=args.pages, page_size=args.page_size, mode="increment", max_model_len=4096, max_num_seqs=32
    )
    if args.step_s:
        run = runner.run
        runner.run = lambda plan: (time.sleep(args.step_s), run(plan))[1]
    app = create_app(AsyncEngine(engine, tokenizer), ServerSettings(model_name="fake-model"))
    serve(app, bind_socket("127.0.0.1", args.port), graceful_timeout_s=2, log_level="warning")
    return 0


class Processes:
    def __init__(self):
        self.children: list[subprocess.Popen] = []

    def start(self, command: list[str]) -> subprocess.Popen:
        child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()
        self.children.clear()


def worker_command(args, port: int, pages: int, step_s: float = 0.0) -> list[str]:
    if args.model:
        return [sys.executable, "-m", "trellis_jax.serve", "--model", args.model, "--port", str(port),
                "--kv-memory", scaled(args.kv_memory, pages // args.pages), "--log-level", "warning"]  # fmt: skip
    return [sys.executable, os.path.abspath(__file__), "worker", "--port", str(port), "--pages", str(pages),
            "--page-size", str(args.page_size), "--step-s", str(step_s)]  # fmt: skip


def scaled(memory: str, factor: int) -> str:
    digits = "".join(c for c in memory if c.isdigit())
    return f"{int(digits) * factor}{memory[len(digits) :]}"


def router_command(policy: str, ports: list[int], port: int) -> list[str]:
    workers = [a for p in ports for a in ("--worker", f"http://127.0.0.1:{p}")]
    return [sys.executable, "-m", "trellis_jax.router", *workers, "--policy", policy, "--port", str(port),
            "--health-interval", "0.5", "--health-timeout", "5", "--log-level", "warning"]  # fmt: skip


def wait_healthy(url: str, timeout_s: float = 900.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become healthy")


def workload(args) -> list[list[dict]]:
    rng = random.Random(args.seed)
    systems = []
    for s in range(8):
        text = f"Tenant {s} system prompt. "
        while len(text) < args.prompt_chars:
            text += rng.choice(WORDS) + " "
        systems.append(text)
    chats = [
        [{"role": "system", "content": systems[s]}, {"role": "user", "content": f"Question {q}: what about {rng.choice(WORDS)}?"}]
        for s in range(8)
        for q in range(args.questions)
    ]  # fmt: skip
    rng.shuffle(chats)
    return chats


async def send_all(url: str, chats: list[list[dict]], concurrency: int) -> dict:
    totals = {"requests": 0, "failed": 0, "prompt_tokens": 0, "cached_tokens": 0}
    queue = list(reversed(chats))

    async def client(http: httpx.AsyncClient):
        while queue:
            messages = queue.pop()
            r = await http.post(
                url + "/v1/chat/completions",
                json={"model": MODEL, "messages": messages, "max_tokens": 2, "temperature": 0},
            )
            totals["requests"] += 1
            if r.status_code != 200:
                totals["failed"] += 1
                continue
            usage = r.json()["usage"]
            totals["prompt_tokens"] += usage["prompt_tokens"]
            totals["cached_tokens"] += usage["prompt_tokens_details"]["cached_tokens"]

    async with httpx.AsyncClient(timeout=600) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    totals["cached_share"] = round(totals["cached_tokens"] / max(1, totals["prompt_tokens"]), 4)
    return totals


def hit_rate(args) -> dict:
    chats, results = workload(args), {}
    for setup in ("cache_aware", "round_robin", "one_engine"):
        procs = Processes()
        try:
            if setup == "one_engine":
                port = free_port()
                procs.start(worker_command(args, port, args.pages * args.replicas))
                url = f"http://127.0.0.1:{port}"
            else:
                ports = [free_port() for _ in range(args.replicas)]
                for p in ports:
                    procs.start(worker_command(args, p, args.pages))
                for p in ports:
                    wait_healthy(f"http://127.0.0.1:{p}")
                port = free_port()
                procs.start(router_command(setup, ports, port))
                url = f"http://127.0.0.1:{port}"
            wait_healthy(url)
            start = time.perf_counter()
            results[setup] = asyncio.run(send_all(url, chats, args.concurrency))
            results[setup]["seconds"] = round(time.perf_counter() - start, 2)
            if setup != "one_engine":
                results[setup]["routed"] = routed_per_worker(httpx.get(url + "/metrics").text)
        finally:
            procs.stop_all()
        print(setup, json.dumps(results[setup]), flush=True)
    aware, rr, one = (results[k]["cached_share"] for k in ("cache_aware", "round_robin", "one_engine"))
    results["cache_aware_vs_round_robin"] = round(aware / max(rr, 1e-9), 2)
    results["cache_aware_vs_one_engine"] = round(aware / max(one, 1e-9), 3)
    return results


def routed_per_worker(metrics: str) -> dict:
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("trellis_router_requests_total{"):
            worker = line.split('worker="')[1].split('"')[0]
            counts[worker] = counts.get(worker, 0) + float(line.rsplit(" ", 1)[1])
    return dict(sorted(counts.items()))


async def whole_one(http: httpx.AsyncClient, url: str, messages: list[dict], max_tokens: int) -> str:
    body = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "ignore_eos": True}
    try:
        r = await http.post(url + "/v1/chat/completions", json=body)
    except httpx.HTTPError:
        return "whole_failed"
    return "whole_ok" if r.status_code == 200 else "whole_failed"


async def stream_one(http: httpx.AsyncClient, url: str, messages: list[dict], max_tokens: int) -> str:
    body = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "stream": True, "ignore_eos": True}
    started = False
    try:
        async with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                return "failed_before_start"
            events = []
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    started = True
                    events.append(line[6:])
            if any('"error"' in e for e in events):
                return "cut_with_error_event" if events[-1] == "[DONE]" else "cut_without_done"
            return "ok" if events and events[-1] == "[DONE]" else "cut_silently"
    except httpx.HTTPError:
        return "cut_silently" if started else "failed_before_start"


def failure(args) -> dict:
    procs = Processes()
    ports = [free_port() for _ in range(args.replicas)]
    outcomes: dict[str, int] = {}
    try:
        workers = [procs.start(worker_command(args, p, args.pages, args.step_s)) for p in ports]
        for p in ports:
            wait_healthy(f"http://127.0.0.1:{p}")
        port = free_port()
        procs.start(router_command("cache_aware", ports, port))
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        chats = workload(args)
        rejoin = {}

        async def chaos():
            await asyncio.sleep(args.kill_after)
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait()
            await asyncio.sleep(args.restart_after)
            procs.start(worker_command(args, ports[0], args.pages, args.step_s))
            restarted = time.monotonic()
            async with httpx.AsyncClient(timeout=5) as http:
                while time.monotonic() - restarted < 120:
                    health = (await http.get(url + "/health")).json()["workers"]
                    if health[f"http://127.0.0.1:{ports[0]}"]:
                        rejoin["seconds_after_restart"] = round(time.monotonic() - restarted, 2)
                        return
                    await asyncio.sleep(0.1)

        async def clients():
            queue = list(chats)
            async with httpx.AsyncClient(timeout=120) as http:

                async def client():
                    while queue:
                        send = stream_one if len(queue) % 2 else whole_one  # every other request not streamed
                        outcome = await send(http, url, queue.pop(), args.stream_tokens)
                        outcomes[outcome] = outcomes.get(outcome, 0) + 1

                await asyncio.gather(*(client() for _ in range(args.concurrency)))

        async def both():
            await asyncio.gather(chaos(), clients())

        start = time.perf_counter()
        asyncio.run(both())
        elapsed = round(time.perf_counter() - start, 2)
        metrics = httpx.get(url + "/metrics").text
        retries = sum(
            float(l.rsplit(" ", 1)[1]) for l in metrics.splitlines() if l.startswith("trellis_router_retries_total{")
        )
    finally:
        procs.stop_all()
    return {"outcomes": outcomes, "rejoin": rejoin, "router_retries": retries, "seconds": elapsed}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", nargs="?", default="bench", choices=["bench", "worker"])
    p.add_argument("--scenario", default="hit-rate", choices=["hit-rate", "failure"])
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--pages", type=int, default=160, help="KV pages per replica (one engine: x replicas)")
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--prompt-chars", type=int, default=600, help="length of each system prompt")
    p.add_argument("--questions", type=int, default=30, help="questions per system prompt")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--model", default=None, help="real servers on this model (e.g. tiny-llama) instead of the fake engine"
    )
    p.add_argument(
        "--kv-memory", default="1280KiB", help="with --model: each replica's --kv-memory (x replicas for one engine)"
    )
    p.add_argument("--step-s", type=float, default=0.02, help="failure: seconds per fake engine step")
    p.add_argument("--stream-tokens", type=int, default=40)
    p.add_argument("--kill-after", type=float, default=3.0)
    p.add_argument("--restart-after", type=float, default=3.0)
    p.add_argument("--port", type=int, default=0, help="worker mode: the port")
    p.add_argument("--out", default=None, help="also write the JSON summary here")
    args = p.parse_args(argv)
    if args.mode == "worker":
        return run_worker(args)
    global MODEL
    MODEL = args.model or MODEL
    result = hit_rate(args) if args.scenario == "hit-rate" else failure(args)
    text = json.dumps({"scenario": args.scenario, "args": vars(args), "result": result}, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
