"""Batch-1 decode speed, end to end: Trellis packed and float against llama.cpp on the same GGUF, alternated.

    python tools/bench_decode_llamacpp.py [--max-tokens 128] [--rounds 3] [--threads N]
                                          [--llama-cpp-path DIR] [--json out.json]

One process holds three systems on the default model's Q4_1 file: Trellis' offline engine with
`weight_format="packed"` (the default for a GGUF), Trellis with `weight_format="float"` and `dtype="float32"`
(the float engine; "the bf16 engine" on a CPU without native bf16), and llama.cpp (llama-cpp-python) on the
same file with `--threads` threads. Each round runs one request per system in turn (round-robin, so a
neighbour's load falls on all of them alike): the bench's first `no_share` prompt cut to --prompt-tokens,
`--max-tokens` greedy tokens, EOS ignored. Decode tok/s = (tokens - 1) / (time of the last token - time of the first), so the prompt's
prefill is left out; each system is warmed up by one untimed request first. Trellis uses XLA's CPU thread
pool, which takes every core of the machine: run it where `--threads` is the machine's core count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from tools.bench.runners.llamacpp import DEFAULT_THREADS, THREADS_HELP


def prompt_tokens(limit: int) -> list[int]:
    from tools.bench.model_files import default_gguf
    from tools.bench.tokenizer import BenchTokenizer
    from tools.bench.workloads import PRESETS, generate

    tokenizer = BenchTokenizer.load(default_gguf())
    request = generate("no_share", 0, PRESETS["cpu"]["no_share"], tokenizer)[0]
    return list(request.prompt_token_ids)[:limit]


class TrellisDecode:
    def __init__(self, weight_format: str):
        from trellis_jax.engine.api import LLM, SamplingParams

        self.llm = LLM(dtype="float32", weight_format=weight_format, kv_memory="64MiB", disable_radix_cache=True)
        self.sampling = SamplingParams
        self.ids = 0

    def times(self, prompt: list[int], max_tokens: int) -> list[float]:
        """Wall time at which each output token arrived (the engine stepped here, one request)."""
        engine = self.llm.engine
        self.ids += 1
        rid = f"decode-{self.ids}"
        engine.add_request(rid, prompt, self.sampling(temperature=0.0, max_tokens=max_tokens, ignore_eos=True))
        stamps, done = [], False
        while not done:
            for delta in engine.step():
                if delta.request_id == rid:
                    stamps += [time.perf_counter()] * len(delta.token_ids)
                    done = delta.finished
        engine.pop_finished()
        return stamps

    def close(self) -> None:
        self.llm.close()


class LlamaCppDecode:
    def __init__(self, path: Path, threads: int):
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(path), n_ctx=2048, n_threads=threads, n_threads_batch=threads, seed=0, verbose=False
        )

    def times(self, prompt: list[int], max_tokens: int) -> list[float]:
        self.llm.reset()  # no prefix reuse from the previous round: every system prefills the prompt
        stamps = []
        for _ in self.llm.generate(prompt, temp=0.0, top_k=1, reset=True):
            stamps.append(time.perf_counter())
            if len(stamps) == max_tokens:
                break
        return stamps

    def close(self) -> None:
        self.llm.close()


def decode_rate(stamps: list[float]) -> float:
    if len(stamps) < 2:
        raise ValueError("a decode rate needs at least two tokens")
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=THREADS_HELP)
    p.add_argument("--prompt-tokens", type=int, default=64, help="the prompt is cut to this many tokens")
    p.add_argument("--llama-cpp-path", type=Path, help="directory holding a llama_cpp package (put first on sys.path)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.max_tokens < 2 or args.rounds < 1 or args.threads < 1 or args.prompt_tokens < 1:
        p.error("--max-tokens must be >= 2 and --rounds, --threads, --prompt-tokens >= 1")
    if args.llama_cpp_path:
        if not (args.llama_cpp_path / "llama_cpp").is_dir():
            p.error(f"--llama-cpp-path {args.llama_cpp_path} holds no llama_cpp package")
        sys.path.insert(0, str(args.llama_cpp_path.resolve()))
    from tools.bench.model_files import default_gguf

    prompt = prompt_tokens(args.prompt_tokens)
    systems = {
        "trellis-packed": TrellisDecode("packed"),
        "trellis-float32": TrellisDecode("float"),
        "llama.cpp-Q4_1": LlamaCppDecode(default_gguf(), args.threads),
    }
    rates = {name: [] for name in systems}
    outputs = {}
    try:
        for system in systems.values():
            system.times(prompt, 8)  # warm-up: compiles Trellis' step programs, pages llama.cpp's weights in
        for _ in range(args.rounds):
            for name, system in systems.items():
                stamps = system.times(prompt, args.max_tokens)
                rates[name].append(decode_rate(stamps))
                outputs[name] = len(stamps)
    finally:
        for system in systems.values():
            system.close()
    print(f"prompt {len(prompt)} tokens, {args.max_tokens} greedy tokens, {args.rounds} rounds alternated")
    print("| system | decode tok/s (median) | each round |")
    print("|---|---|---|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
    ref = statistics.median(rates["llama.cpp-Q4_1"])
    for name in ("trellis-packed", "trellis-float32"):
        print(f"{name} / llama.cpp-Q4_1: {statistics.median(rates[name]) / ref:.2f}x")
    print(
        "trellis-packed / trellis-float32: "
        f"{statistics.median(rates['trellis-packed']) / statistics.median(rates['trellis-float32']):.2f}x"
    )
    if args.json:
        args.json.write_text(json.dumps({"prompt_tokens": len(prompt), "rates": rates, "tokens": outputs}, indent=1))


if __name__ == "__main__":
    main()
