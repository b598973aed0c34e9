"""Capacity benchmark of the radix cache's lower tiers: a shared-system-prompt workload whose working set is
`--pool-fraction`⁻¹ times the device pool (default 4x), served three ways on one model:

    unlimited   a pool that holds the whole working set (nothing is evicted)
    L1 only     the small pool, evicted prefixes are recomputed
    L1 + L2     the same small pool with a host page store (evicted pages demoted, reloaded when cheaper)

Each way runs `--repeats` times, interleaved (L1, L2, unlimited, L1, L2, unlimited...), each on a fresh engine
(the two small-pool ways share one compiled runner). Reports per run: prompt-token hit rate (cached at
admission / prompt tokens), wall seconds, requests/s and tokens/s (prompt + output), reloaded and demoted pages.

The L2 is trellis_testing's DictPageStore (numpy pages in a dict: what a host store costs, less its slab
copy); the kvstore package's HostPageStore plugs in the same way.

Usage: python tools/bench_tiers.py [--model PATH] [--systems 8] [--system-tokens 256] [--rounds 3]
       [--concurrency 4] [--pool-fraction 0.25] [--repeats 2]
"""

from __future__ import annotations

import argparse
import random
import time

from trellis_jax.engine.api import EngineConfig, SamplingParams
from trellis_jax.engine.builder import build_engine, make_runner
from trellis_jax.engine.tiers import TierMover
from trellis_testing.dict_page_store import DictPageStore
from trellis_testing.drive import run_all

PAGE = 16
QUESTION_TOKENS = 32


def workload(args, vocab: int) -> list[list[int]]:
    """`rounds` passes over `systems` system prompts, a fresh question each time, in round-robin order (so a
    small pool has evicted a system prompt before it comes back)."""
    rng, top = random.Random(0), min(vocab, 30000)
    systems = [[rng.randrange(10, top) for _ in range(args.system_tokens)] for _ in range(args.systems)]
    return [
        systems[s] + [rng.randrange(10, top) for _ in range(QUESTION_TOKENS)]
        for _ in range(args.rounds)
        for s in range(args.systems)
    ]


def working_set_pages(args) -> int:
    return args.systems * -(-args.system_tokens // PAGE) + args.concurrency * 4


def serve(config: EngineConfig, loaded, runner, prompts, args, tiered: bool) -> dict:
    engine, _ = build_engine(config, loaded, runner)
    if tiered:
        engine.tiers = TierMover(
            engine.scheduler, runner, DictPageStore(), bytes_per_page=runner.kv_pool.bytes_per_page
        )
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens, ignore_eos=True)
    start, outputs = time.perf_counter(), 0
    for first in range(0, len(prompts), args.concurrency):
        batch = prompts[first : first + args.concurrency]
        for i, prompt in enumerate(batch):
            engine.add_request(f"r{first + i}", prompt, params)
        outputs += sum(len(o.outputs[0].token_ids) for o in run_all(engine).values())
    seconds = time.perf_counter() - start
    stats = engine.scheduler.stats
    tier = engine.tier_stats()
    prompt_tokens = sum(len(p) for p in prompts)
    return {
        "hit_rate": stats.cache_hit_rate,
        "seconds": seconds,
        "requests_per_s": len(prompts) / seconds,
        "tokens_per_s": (prompt_tokens + outputs) / seconds,
        "reloaded": sum(tier["counters"].reloaded_pages.values()) if tier else 0,
        "demoted": tier["counters"].demoted_pages if tier else 0,
        "computed": stats.num_prefill_tokens_computed,
        "preemptions": stats.num_preemptions,
        "steps": engine.num_steps,
        "prefill_tok_s_seen": tier["prefill_tokens_per_s"] if tier else None,
        "h2d_MBps": tier["h2d_bytes_per_s"] / 1e6 if tier else None,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="GGUF / HF dir / preset (default: the default model)")
    parser.add_argument("--systems", type=int, default=8)
    parser.add_argument("--system-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--pool-fraction", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    from trellis_jax.checkpoints import load_model

    loaded = load_model(args.model)
    base = dict(
        page_size=PAGE,
        max_num_seqs=args.concurrency,
        max_num_batched_tokens=256,
        token_buckets=(16, 32, 64, 128, 256),  # a step of reloaded prompts is short: do not pad it to 256
        seq_buckets=(args.concurrency,),
        max_model_len=args.system_tokens + QUESTION_TOKENS + args.max_tokens + PAGE,
        overlap=False,
    )
    working = working_set_pages(args)
    small = EngineConfig(num_pages=max(int(working * args.pool_fraction), 2 + args.concurrency * 2) + 1, **base)
    large = EngineConfig(num_pages=working * 2 + 1, **base)
    small_runner, large_runner = make_runner(small, loaded), make_runner(large, loaded)
    prompts = workload(args, loaded.config.vocab_size)
    print(
        f"working set ~{working} pages; small pool {small.num_pages - 1} usable pages, "
        f"unlimited {large.num_pages - 1}; {len(prompts)} requests of {len(prompts[0])} prompt tokens"
    )
    print(
        f"{'way':12} {'hit rate':>8} {'seconds':>8} {'req/s':>7} {'tok/s':>8} {'reloaded':>8} {'demoted':>8} "
        f"{'computed':>8} {'preempt':>7} {'steps':>6}"
    )
    for _ in range(args.repeats):
        for name, config, runner, tiered in (
            ("L1 only", small, small_runner, False),
            ("L1 + L2", small, small_runner, True),
            ("unlimited", large, large_runner, False),
        ):
            r = serve(config, loaded, runner, prompts, args, tiered)
            print(
                f"{name:12} {r['hit_rate']:8.3f} {r['seconds']:8.2f} {r['requests_per_s']:7.2f} "
                f"{r['tokens_per_s']:8.0f} {r['reloaded']:8d} {r['demoted']:8d} {r['computed']:8d} "
                f"{r['preemptions']:7d} {r['steps']:6d}"
                + (
                    f"   (cost model: prefill {r['prefill_tok_s_seen']:.0f} tok/s, h2d {r['h2d_MBps']:.0f} MB/s)"
                    if tiered
                    else ""
                )
            )


if __name__ == "__main__":
    main()
