"""Prompt-lookup speculative decoding, measured: the same greedy requests with and without
`num_lookup_tokens`, side by side in one process, one request at a time (the latency a single user sees).

    python -m tools.bench_lookup [--dtype bfloat16] [--lookup 3] [--max-tokens 96] [--repeats 3] [--out F.json]

For each prompt class (a code edit that copies most of its input, a passage to quote back, a chat
answer that repeats nothing, and the bench's multi-turn chat) it prints the median wall time per
request of both engines, the decode steps, how many guessed tokens were verified and kept, and checks
that both produced the same tokens. Engines alternate per request, so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

CODE = """def moving_average(values, window):
    if window <= 0:
        raise ValueError("window must be positive")
    total = 0.0
    averages = []
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        if index >= window - 1:
            averages.append(total / window)
    return averages
"""
PASSAGE = (
    "The radix tree keeps the keys and values of every prompt prefix it has seen, so a request that "
    "starts like an earlier one skips the work for the shared part. Pages that no running request "
    "holds are evicted least recently used first when memory runs short."
)
PROMPTS = {
    "code_edit": [
        {
            "role": "user",
            "content": "Rename the variable `total` to `running_sum` in this function "
            "and return the whole function:\n\n" + CODE,
        }
    ],
    "quote": [{"role": "user", "content": "Repeat this paragraph word for word:\n\n" + PASSAGE}],
    "chat": [{"role": "user", "content": "Give three tips for keeping houseplants alive in winter."}],
}


def _bench_multi_turn(tokenizer_path):
    from tools.bench.tokenizer import BenchTokenizer
    from tools.bench.workloads import PRESETS, generate

    requests = generate("multi_turn", 0, PRESETS["cpu"]["multi_turn"], BenchTokenizer.load(tokenizer_path))
    return requests[-1].prompt_token_ids  # the longest turn


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--lookup", type=int, default=3, help="num_lookup_tokens of the second engine")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile-cache-dir", default=None)
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    from tools.bench.model_files import default_gguf
    from trellis_jax.engine.api import LLM, SamplingParams

    options = dict(dtype=args.dtype, kv_memory="256MiB", compile_cache_dir=args.compile_cache_dir)
    engines = {"plain": LLM(**options), "lookup": LLM(**options, num_lookup_tokens=args.lookup)}
    prompts = dict(PROMPTS, bench_multi_turn=_bench_multi_turn(default_gguf()))
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    rows = []
    for name, prompt in prompts.items():
        times = {k: [] for k in engines}
        steps, tokens = {}, {}
        for repeat in range(args.repeats):
            order = list(engines) if repeat % 2 == 0 else list(engines)[::-1]
            for key in order:
                llm = engines[key]
                llm.engine.scheduler.kv.cache.evict(llm.engine.scheduler.kv.cache.num_evictable_pages)
                stats, steps_before = llm.engine.scheduler.stats, llm.engine.num_steps
                drafts_before = (stats.num_draft_tokens, stats.num_accepted_draft_tokens)
                started = time.perf_counter()
                out = llm.generate([prompt], params, use_tqdm=False)
                times[key].append(time.perf_counter() - started)
                steps[key] = llm.engine.num_steps - steps_before
                tokens[key] = out[0].token_ids
                drafted = (
                    stats.num_draft_tokens - drafts_before[0],
                    stats.num_accepted_draft_tokens - drafts_before[1],
                )
        plain, fast = statistics.median(times["plain"]), statistics.median(times["lookup"])
        rows.append(
            dict(
                prompt=name,
                plain_s=plain,
                lookup_s=fast,
                speedup=plain / fast,
                plain_steps=steps["plain"],
                lookup_steps=steps["lookup"],
                guessed=drafted[0],
                kept=drafted[1],
                same_tokens=tokens["plain"] == tokens["lookup"],
            )
        )
    print(
        f"dtype {args.dtype}, num_lookup_tokens {args.lookup}, {args.max_tokens} tokens per request, "
        f"median of {args.repeats}"
    )
    print("| prompt | plain s | lookup s | speed-up | steps plain / lookup | guesses kept / verified | same tokens |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['prompt']} | {r['plain_s']:.2f} | {r['lookup_s']:.2f} | {r['speedup']:.2f}x | "
            f"{r['plain_steps']} / {r['lookup_steps']} | {r['kept']} / {r['guessed']} | {r['same_tokens']} |"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r["same_tokens"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
