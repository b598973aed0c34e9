"""How closely each precision's greedy output tracks the float32 model's, on the bench's prompts.

    python -m tools.greedy_agreement [--max-tokens 32] [--systems trellis-f32,trellis-packed,llama.cpp-Q4_1,...]
                                     [--cache-dir results/bench-cache] [--json out.json] [--llama-cpp-path DIR]

Every prompt of the `cpu` preset's five workloads (seed 0) gets `--max-tokens` greedy tokens from each
system, EOS included (nothing stops early), one prompt at a time. Systems: Trellis' engine on float weights
(the Q4_1 file dequantized at load) pinned to float32 or bfloat16, Trellis on the Q4_1 weights kept packed
(`trellis-packed`, float32 activations), and llama.cpp (llama-cpp-python, if installed; `--llama-cpp-path`
names a directory holding it) on the F32 and BF16 GGUFs written from the default model and on the original
Q4_1. For each system it prints how many prompts' tokens are identical to Trellis float32's, to llama.cpp
F32's and to llama.cpp Q4_1's, and where each prompt first diverges from Trellis float32's.
Greedy decoding flips at near-ties, so this counts how often a precision's rounding changes the text.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tools.bench.runners.llamacpp import DEFAULT_THREADS, THREADS_HELP

SYSTEMS = ("trellis-f32", "trellis-bf16", "trellis-packed", "llama.cpp-F32", "llama.cpp-BF16", "llama.cpp-Q4_1")
REFERENCE = "trellis-f32"
# Each system is also compared with these, where they ran: llama.cpp F32 (its BF16 against it is the bar
# for a precision's rounding) and llama.cpp Q4_1 (the same file multiplied packed by another engine).
REFERENCES = (REFERENCE, "llama.cpp-F32", "llama.cpp-Q4_1")
# name -> (model dtype, weight format); the float ones dequantize the file at load, whatever `auto` picks.
TRELLIS_SYSTEMS = {
    "trellis-f32": ("float32", "float"),
    "trellis-bf16": ("bfloat16", "float"),
    "trellis-packed": ("float32", "packed"),
}


def bench_prompts() -> list[list[int]]:
    from tools.bench.model_files import default_gguf
    from tools.bench.tokenizer import BenchTokenizer
    from tools.bench.workloads import PRESETS, WORKLOADS, generate

    tokenizer = BenchTokenizer.load(default_gguf())
    return [list(r.prompt_token_ids) for w in WORKLOADS for r in generate(w, 0, PRESETS["cpu"][w], tokenizer)]


def trellis_tokens(dtype: str, weight_format: str, prompts, max_tokens: int) -> list[list[int]]:
    from trellis_jax.engine.api import LLM, SamplingParams

    with LLM(dtype=dtype, weight_format=weight_format, kv_memory="256MiB") as llm:
        outputs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True))
    return [list(o.outputs[0].token_ids) for o in outputs]


def llama_cpp_tokens(gguf_path: Path, prompts, max_tokens: int, threads: int = DEFAULT_THREADS) -> list[list[int]]:
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(gguf_path),
        n_ctx=2048,
        n_threads=threads,
        n_threads_batch=threads,
        n_batch=512,
        seed=0,
        verbose=False,
    )
    try:
        runs = []
        for prompt in prompts:
            tokens = []
            for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
                tokens.append(int(token))
                if len(tokens) == max_tokens:
                    break
            runs.append(tokens)
        return runs
    finally:
        llm.close()


def generate_all(
    systems, prompts, max_tokens: int, cache_dir: Path, threads: int = DEFAULT_THREADS
) -> dict[str, list[list[int]]]:
    from tools.bench.model_files import converted_gguf, default_gguf

    out = {}
    for name in systems:
        if name in TRELLIS_SYSTEMS:
            out[name] = trellis_tokens(*TRELLIS_SYSTEMS[name], prompts, max_tokens)
        else:
            precision = name.split("-", 1)[1]
            path = default_gguf() if precision == "Q4_1" else converted_gguf(cache_dir, precision)
            out[name] = llama_cpp_tokens(path, prompts, max_tokens, threads)
    return out


def first_divergence(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def summary(runs: dict[str, list[list[int]]]) -> list[dict]:
    rows = []
    for name, seqs in runs.items():
        row = {"system": name, "prompts": len(seqs)}
        for ref in REFERENCES:
            if ref in runs:
                row[f"identical_to_{ref}"] = sum(a == b for a, b in zip(seqs, runs[ref]))
        if REFERENCE in runs:
            row["first_divergence"] = sorted(first_divergence(a, b) for a, b in zip(seqs, runs[REFERENCE]))
        rows.append(row)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.greedy_agreement", description=__doc__.split("\n\n")[0])
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--cache-dir", type=Path, default=Path("results/bench-cache"), help="where the F32/BF16 GGUFs go")
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--llama-cpp-threads",
        type=int,
        default=DEFAULT_THREADS,
        help=THREADS_HELP,
    )
    p.add_argument(
        "--add-runs",
        type=Path,
        help="a --json file of an earlier run (same prompts and --max-tokens): its systems join this run's",
    )
    p.add_argument("--llama-cpp-path", type=Path, help="directory holding a llama_cpp package (put first on sys.path)")
    args = p.parse_args(argv)
    if args.llama_cpp_path:
        if not (args.llama_cpp_path / "llama_cpp").is_dir():
            p.error(f"--llama-cpp-path {args.llama_cpp_path} holds no llama_cpp package")
        sys.path.insert(0, str(args.llama_cpp_path.resolve()))
    systems = [s for s in args.systems.split(",") if s]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        p.error(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    if args.llama_cpp_threads < 1:
        p.error("--llama-cpp-threads must be >= 1")
    prompts = bench_prompts()
    runs = {}
    if args.add_runs:
        runs = json.loads(args.add_runs.read_text())["tokens"]
        if any(len(seqs) != len(prompts) or any(len(t) != args.max_tokens for t in seqs) for seqs in runs.values()):
            p.error(f"{args.add_runs} was not made with these prompts and --max-tokens {args.max_tokens}")
    runs.update(generate_all(systems, prompts, args.max_tokens, args.cache_dir, args.llama_cpp_threads))
    rows = summary(runs)
    print(f"{len(prompts)} prompts x {args.max_tokens} greedy tokens")
    print(
        "| system | "
        + " | ".join(f"identical to {ref}" for ref in REFERENCES)
        + " | first divergence from trellis-f32 (sorted) |"
    )
    print("|---" * (len(REFERENCES) + 2) + "|")
    for r in rows:
        cells = [f"{r[key]}/{r['prompts']}" if (key := f"identical_to_{ref}") in r else "n/a" for ref in REFERENCES]
        print(f"| {r['system']} | " + " | ".join(cells) + f" | {r.get('first_divergence', 'n/a')} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "tokens": runs}, indent=1))


if __name__ == "__main__":
    main()
