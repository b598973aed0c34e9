"""Micro-benchmark of the radix cache (host only, no device): not a test, numbers go to docs/benchmarks/cache.md.

Measures, per page size:
- match and insert throughput (prompt tokens/s) on a tree holding ~1M cached tokens built from a
  realistic chat workload: a few long system prompts (Zipf-popular), multi-turn sessions whose turn k
  extends turn k-1, random user/assistant lengths;
- the per-request host cost of the scheduler's sequence (match, lock, alloc, insert, relock, unlock,
  free), in microseconds;
- evict(1) latency on a tree of 100k nodes, for every registered policy.

Times are thread CPU time (see ``clock``). Usage: python tools/bench_cache.py [--tokens 1000000] [--page-sizes 1,16,64] [--evict-leaves 100000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from trellis_jax.cache import RadixCache, policy_names
from trellis_jax.cache.tree import iter_nodes

VOCAB = 32_000
# CPU time of this thread, not wall time: on a shared, overloaded host, preemption would otherwise
# dominate the tails (the cache itself never sleeps or does I/O, so CPU time is its cost).
clock = time.thread_time


def chat_prompts(rng: random.Random, num_system: int = 16):
    """Endless multi-turn chat prompts sharing Zipf-popular system prompts."""
    systems = [[rng.randrange(VOCAB) for _ in range(rng.randint(200, 1500))] for _ in range(num_system)]
    weights = [1 / (i + 1) for i in range(num_system)]
    while True:
        prompt = list(rng.choices(systems, weights)[0])
        for _ in range(rng.randint(1, 6)):
            prompt += [rng.randrange(VOCAB) for _ in range(rng.randint(20, 300))]  # user turn
            yield list(prompt)
            prompt += [rng.randrange(VOCAB) for _ in range(rng.randint(20, 400))]  # assistant reply


def serve(cache: RadixCache, prompt: list[int]) -> None:
    """One request the way the scheduler runs it: match, lock, alloc, insert, relock, finish."""
    ps = cache.page_size
    m = cache.match(prompt)
    cache.lock(m.handle)
    own = cache.alloc_pages(-(-len(prompt) // ps) - len(m.page_ids))
    full = len(prompt) // ps
    n_new = full - len(m.page_ids)
    r = cache.insert(prompt[: full * ps], m.page_ids + own[:n_new])
    cache.lock(r.handle)
    cache.unlock(m.handle)
    cache.unlock(r.handle)
    cache.free_pages(own[n_new:])


def build_tree(page_size: int, target_tokens: int, seed: int) -> tuple[RadixCache, list[list[int]]]:
    pool = target_tokens * 5 // 4 // page_size + 1024  # 25% headroom: serving new prompts then evicts (steady state)
    cache = RadixCache(pool, page_size)
    prompts = chat_prompts(random.Random(seed))
    seen = []
    while cache.num_evictable_pages * page_size < target_tokens:
        prompt = next(prompts)
        serve(cache, prompt)
        seen.append(prompt)
    return cache, seen


def bench_match_insert(page_size: int, target_tokens: int, seed: int) -> dict:
    t0 = clock()
    cache, seen = build_tree(page_size, target_tokens, seed)
    build_s = clock() - t0
    rng = random.Random(seed + 1)
    sample = rng.sample(seen, min(2000, len(seen)))
    fresh = [p for p, _ in zip(chat_prompts(random.Random(seed)), range(len(seen) + 2000))][len(seen) :]
    cached_tokens = cache.stats.resident_pages * page_size
    cache.reset_stats()
    t0 = clock()
    for prompt in sample:
        cache.match(prompt)
    match_s = clock() - t0
    match_tokens = sum(map(len, sample))
    t0 = clock()
    request_cost = []
    for prompt in fresh:
        start = clock()
        serve(cache, prompt)
        request_cost.append(clock() - start)
    serve_s = clock() - t0
    return {
        "page_size": page_size,
        "cached_tokens": cached_tokens,
        "build_s": build_s,
        "match_tok_s": match_tokens / match_s,
        "serve_tok_s": sum(map(len, fresh)) / serve_s,
        "req_us_median": statistics.median(request_cost) * 1e6,
        "req_us_p99": sorted(request_cost)[int(0.99 * len(request_cost))] * 1e6,
        "mean_prompt": statistics.mean(map(len, fresh)),
        "hit_rate": cache.stats.hit_rate,
    }


def bench_evict(policy: str, num_leaves: int, seed: int, calls: int = 2000) -> dict:
    """evict(1) latency on a tree of ~``num_leaves`` one-page leaves under shared one-page parents.

    Recency is shuffled by matching a random half of the leaves, so the heap holds re-keyed (stale)
    entries as it would in service.
    """
    rng = random.Random(seed)
    cache = RadixCache(2 * num_leaves + 1024, 1, policy=policy)
    prompts = [[i // 64, 1_000_000 + i] for i in range(num_leaves)]
    for prompt in prompts:
        cache.insert(prompt, cache.alloc_pages(2))
    for prompt in rng.sample(prompts, num_leaves // 2):
        cache.match(prompt)
    nodes = sum(1 for _ in iter_nodes(cache._root))
    latencies = []
    for _ in range(calls):
        t0 = clock()
        cache.evict(1)
        latencies.append(clock() - t0)
    latencies.sort()
    return {
        "policy": policy,
        "nodes": nodes,
        "evict_us_median": latencies[len(latencies) // 2] * 1e6,
        "evict_us_p99": latencies[int(0.99 * len(latencies))] * 1e6,
        "evict_us_max": latencies[-1] * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--page-sizes", default="1,16,64")
    parser.add_argument("--evict-leaves", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        "| page_size | cached tokens | match tok/s | serve (match+alloc+insert+lock) tok/s | "
        "per-request µs median / p99 | mean prompt | hit rate |"
    )
    print("|---|---|---|---|---|---|---|")
    for ps in map(int, args.page_sizes.split(",")):
        r = bench_match_insert(ps, args.tokens, args.seed)
        print(
            f"| {ps} | {r['cached_tokens']:,} | {r['match_tok_s']:,.0f} | {r['serve_tok_s']:,.0f} | "
            f"{r['req_us_median']:.0f} / {r['req_us_p99']:.0f} | {r['mean_prompt']:.0f} | {r['hit_rate']:.3f} |"
        )
    print()
    print("| policy | nodes | evict(1) µs median | p99 | max |")
    print("|---|---|---|---|---|")
    for policy in policy_names():
        r = bench_evict(policy, args.evict_leaves, args.seed)
        print(
            f"| {policy} | {r['nodes']:,} | {r['evict_us_median']:.1f} | {r['evict_us_p99']:.1f} | "
            f"{r['evict_us_max']:.0f} |"
        )


if __name__ == "__main__":
    main()
