"""Bounded loopback load test of the OpenAI-compatible server (issue 6).

    .venv/bin/python tools/load_test.py                 # real default model, in-process server
    .venv/bin/python tools/load_test.py --fake          # fake engine: checks the HTTP/engine plumbing fast

Starts the server in this process on 127.0.0.1 (never another address), then:
1. runs every distinct prompt alone (greedy) to get its reference output;
2. sends --requests streaming chat requests from --clients concurrent clients over a shared-prefix mix
   (a few long system prompts x many questions); --disconnect-frac of them hang up mid-stream;
3. checks: zero 5xx, every completed output equal to its reference, the engine back to the idle
   baseline (no locked or private page, no request left) and the cache's check_integrity() clean;
4. prints throughput and client-side TTFT p50/p99 as JSON (and writes it to --out).
The real model runs in deterministic mode (a batch-invariant runner: a sequence's floats do not depend on
what else is in the batch, how its prompt was chunked or what the cache held): that is what makes "equal
to the same request run alone" a valid check. --no-deterministic runs the default kernels instead, to
measure what the guarantee costs (its mismatches are then expected, and counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time

import httpx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "serve"))

SYSTEM_PROMPTS = [
    "You are a meticulous travel agent. You answer questions about cities, transport and museums with short, "
    "precise sentences, and you never invent opening hours or prices you are not sure about.",
    "You are a patient math tutor for teenagers. Explain each step of a calculation in plain words, check the "
    "result at the end, and keep every answer shorter than five sentences.",
    "You are a senior Python reviewer. Point out bugs first, then style problems, and suggest the smallest "
    "change that fixes each one. Quote the exact line you are talking about.",
    "You are a friendly cooking assistant. Suggest simple recipes with ingredients found in any supermarket "
    "and give quantities for two people in metric units.",
]
QUESTIONS = [
    "What should I see first?",
    "How long does it take?",
    "Is it expensive?",
    "Can you give an example?",
    "What is the most common mistake?",
    "Summarise that in one sentence.",
    "Why does that work?",
    "What would you do instead?",
]


def workload(num_requests: int, seed: int) -> list[list[dict]]:
    rng = random.Random(seed)
    return [
        [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}, {"role": "user", "content": rng.choice(QUESTIONS)}]
        for _ in range(num_requests)
    ]


async def stream_chat(client: httpx.AsyncClient, model: str, messages, max_tokens: int, hang_up_after: int | None):
    """One streaming request. Returns (status, text or None if we hung up, ttft seconds or None)."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    start = time.perf_counter()
    ttft, text, chunks = None, [], 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, None, None
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            payload = json.loads(line[6:])
            if "error" in payload:
                return 500, None, ttft
            for choice in payload["choices"]:
                piece = choice["delta"].get("content") or ""
                if piece and ttft is None:
                    ttft = time.perf_counter() - start
                text.append(piece)
            chunks += 1
            if hang_up_after is not None and chunks >= hang_up_after:
                return 200, None, ttft  # leaving the context manager closes the connection mid-stream
    return 200, "".join(text), ttft


async def references(client, model, prompts, max_tokens) -> dict[str, str]:
    out = {}
    for messages in prompts:
        key = json.dumps(messages)
        if key not in out:
            status, text, _ = await stream_chat(client, model, messages, max_tokens, None)
            if status != 200:
                raise RuntimeError(f"reference request failed with HTTP {status}")
            out[key] = text
    return out


async def run_load(url: str, model: str, args) -> dict:
    prompts = workload(args.requests, args.seed)
    rng = random.Random(args.seed + 1)
    limits = httpx.Limits(max_connections=args.clients + 8)
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits) as client:
        expected = await references(client, model, prompts, args.max_tokens)
        print(f"  {len(expected)} reference outputs computed alone; starting the load", file=sys.stderr, flush=True)
        queue: asyncio.Queue = asyncio.Queue()
        for messages in prompts:
            queue.put_nowait((messages, rng.randint(1, 3) if rng.random() < args.disconnect_frac else None))
        results = []

        async def worker():
            while not queue.empty():
                messages, hang_up = queue.get_nowait()
                status, text, ttft = await stream_chat(client, model, messages, args.max_tokens, hang_up)
                results.append((json.dumps(messages), status, text, ttft, hang_up))
                if len(results) % 50 == 0:
                    print(f"  {len(results)}/{args.requests} requests done", file=sys.stderr, flush=True)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.clients)))
        elapsed = time.perf_counter() - start
    return summarise(results, expected, elapsed)


def summarise(results, expected, elapsed) -> dict:
    completed = [r for r in results if r[2] is not None]
    mismatches = [r for r in completed if r[2] != expected[r[0]]]
    ttfts = sorted(r[3] for r in results if r[3] is not None)
    return {
        "requests": len(results),
        "completed": len(completed),
        "hung_up": sum(r[4] is not None for r in results),
        "status_5xx": sum(r[1] >= 500 for r in results),
        "status_4xx": sum(400 <= r[1] < 500 for r in results),
        "mismatched_outputs": len(mismatches),
        "identical_to_solo": round(1 - len(mismatches) / len(completed), 4) if completed else None,
        "elapsed_s": round(elapsed, 2),
        "requests_per_s": round(len(completed) / elapsed, 3),
        "ttft_p50_s": round(statistics.median(ttfts), 4) if ttfts else None,
        "ttft_p99_s": round(ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))], 4) if ttfts else None,
        "distinct_prompts": len(expected),
    }


def idle_check(engine, timeout: float = 30.0) -> dict:
    from serve_harness import engine_idle, wait_until

    idle = wait_until(lambda: engine_idle(engine), timeout=timeout)
    cache = engine.engine.scheduler.kv.cache
    cache.check_integrity()
    return {
        "idle_after": idle,
        "locked_pages": cache.num_locked_pages,
        "private_pages": cache.num_private_pages,
        "evictable_pages": cache.num_evictable_pages,
        "free_pages": cache.num_free_pages,
        "integrity": "clean",
        "hit_rate": round(cache.stats.hit_rate, 4),
    }


def build_engine(args):
    if args.fake:
        from serve_harness import fake_engine

        return (
            fake_engine(
                num_pages=args.fake_pages,
                page_size=4,
                max_model_len=1024,
                max_num_seqs=args.max_num_seqs,
                step_s=args.fake_step_s,
            ),
            "fake-model",
            None,
        )
    from trellis_jax.engine.api import AsyncEngine
    from trellis_jax.serve.costs import CostModel

    engine = AsyncEngine.from_options(
        model=args.model,
        deterministic=args.deterministic,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_model_len=1024,
        kv_memory=args.kv_memory,
    )
    return engine, "SmolLM2-135M-Instruct", CostModel(engine.engine.runner.config)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fake", action="store_true", help="fake engine instead of the real model")
    p.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="batch-invariant engine (default); --no-deterministic: the default kernels",
    )
    p.add_argument("--model", default=None)
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--disconnect-frac", type=float, default=0.2)
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--max-num-seqs", type=int, default=32)
    p.add_argument("--max-num-batched-tokens", type=int, default=256)
    p.add_argument("--kv-memory", default="64MiB")
    p.add_argument("--fake-pages", type=int, default=2048)
    p.add_argument("--fake-step-s", type=float, default=0.002)
    p.add_argument("--timeout", type=float, default=600.0, help="per-request HTTP timeout (the run is bounded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the JSON summary here too")
    args = p.parse_args(argv)
    if not (1 <= args.requests <= 5000 and 1 <= args.clients <= 256):
        p.error("--requests must be in [1, 5000] and --clients in [1, 256] (a bounded test)")

    from serve_harness import ServerThread

    from trellis_jax.serve.app import ServerSettings, create_app
    from trellis_jax.serve.costs import CostModel

    engine, model, cost = build_engine(args)
    app = create_app(engine, ServerSettings(model_name=model, cost=cost or CostModel(), shutdown_engine=False))
    with ServerThread(app) as server:  # binds 127.0.0.1 only
        summary = asyncio.run(run_load(server.url, model, args))
        summary.update(idle_check(engine))
    engine.shutdown()
    summary.update(
        {
            "engine": "fake" if args.fake else model,
            "deterministic": args.deterministic,
            "clients": args.clients,
            "max_tokens": args.max_tokens,
        }
    )
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    ok = summary["status_5xx"] == 0 and summary["mismatched_outputs"] == 0 and summary["idle_after"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
