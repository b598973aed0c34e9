"""Replay speed check: ``python -m trellis_jax.ablate.speed`` times one policy x capacity cell on a big
synthetic trace (default: 100k requests, about 100M prompt tokens) and prints the numbers as JSON.

The trace: 256 Zipf-popular system prompts of ~512 tokens, multi-turn sessions (mean 4 turns, 64
open at once) with ~96-token messages and replies, two tenants, and flush bursts. What is timed is
``replay`` alone (the cache's match / lock / alloc / insert / unlock / free per request), not the trace
generation, which is reported separately. ``replay_cpu_s`` is the process CPU time of the replay: on a
shared machine (see ``load_avg_1min``) it is the steadier number.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

from trellis_jax.ablate import policies as _example_policies  # noqa: F401  (registers "arc")
from trellis_jax.ablate.replay import ReplayConfig, replay
from trellis_jax.ablate.synthetic import SyntheticSpec, generate


def big_spec(num_requests: int, seed: int = 0) -> SyntheticSpec:
    return SyntheticSpec(
        num_requests=num_requests,
        num_prefixes=256,
        prefix_len=512,
        zipf_alpha=1.1,
        concurrent_sessions=64,
        turns=4,
        user_len=96,
        output_len=96,
        num_tenants=2,
        burst_every=500,
        burst_size=5,
        burst_len=4096,
        seed=seed,
        name="speed",
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trellis_jax.ablate.speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--policy", default="lru")
    p.add_argument("--capacity", type=int, default=131072, help="pages")
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--order", default="fcfs")
    args = p.parse_args(argv)
    start = time.perf_counter()
    trace = generate(big_spec(args.requests))
    generate_s = time.perf_counter() - start
    cpu_start = time.process_time()
    result = replay(trace, ReplayConfig(args.capacity, args.page_size, args.policy, args.order))
    replay_cpu_s = time.process_time() - cpu_start
    prompt_tokens = trace.num_prompt_tokens
    print(
        json.dumps(
            dict(
                requests=len(trace),
                prompt_tokens=prompt_tokens,
                output_tokens=trace.num_output_tokens,
                policy=args.policy,
                order=args.order,
                capacity_pages=args.capacity,
                page_size=args.page_size,
                hit_rate=round(result.hit_rate, 4),
                pages_evicted=result.evicted_pages,
                generate_s=round(generate_s, 1),
                replay_s=round(result.wall_s, 1),
                replay_cpu_s=round(replay_cpu_s, 1),
                load_avg_1min=os.getloadavg()[0],
                tokens_per_s=round(prompt_tokens / result.wall_s),
                us_per_request=round(1e6 * result.wall_s / len(trace), 1),
                max_rss_gib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            )
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
