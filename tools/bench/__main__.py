"""`python -m tools.bench` — the CPU comparison, workload files, and its page under docs/benchmarks/.

    python -m tools.bench run [--preset cpu] [--systems a,b] [--workloads a,b] [--repeats 2] [--out results/bench]
                              [--update-benchmarks]    # also write docs/benchmarks/latest-run.md
    python -m tools.bench workloads --preset cpu --seed 0 --out results/bench/workloads   # JSONL only
    python -m tools.bench report results/bench/results.json [--update-benchmarks]        # re-render

`run` prints which systems it found and skips, writes results.json, report.md and PNGs into --out.
`--update-benchmarks` puts the report (its "Against other engines" section) on docs/benchmarks/latest-run.md
and its plots in docs/bench/; BENCHMARKS.md's headline table is a reader's summary, edited by hand from it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path

from . import systems as system_registry
from .model_files import converted_gguf, default_gguf
from .runners.llamacpp import DEFAULT_THREADS, THREADS_HELP
from .workloads import PRESETS, WORKLOADS

LATEST_RUN_MD = Path(__file__).resolve().parents[2] / "docs" / "benchmarks" / "latest-run.md"
DOCS_DIR = Path(__file__).resolve().parents[2] / "docs" / "bench"
DEFAULT_SYSTEMS = (
    "trellis",
    "trellis-f32",
    "trellis-nocache",
    "trellis-http",
    "hf",
    "hf-reuse",
    "llama.cpp-Q4_1",
    "llama.cpp-Q4_1-ramcache",
    "llama.cpp-F32",
    "llama.cpp-F32-ramcache",
    "llama.cpp-BF16",
    "llama.cpp-BF16-ramcache",
    "llama.cpp-http",
)


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v for v in value.split(",") if v)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the comparison")
    run.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    run.add_argument("--systems", type=_csv, default=DEFAULT_SYSTEMS)
    run.add_argument("--workloads", type=_csv, default=WORKLOADS)
    run.add_argument("--repeats", type=int, default=2)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=THREADS_HELP)
    run.add_argument("--out", type=Path, default=Path("results/bench"))
    run.add_argument(
        "--cache-dir",
        type=Path,
        default=Path("results/bench-cache"),
        help="F32 GGUF and JAX compile cache, kept across runs (the first run compiles)",
    )
    run.add_argument("--start-timeout", type=float, default=3600.0, help="seconds a system may take to load + warm up")
    run.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds after start-up; later runs are skipped and listed as not run",
    )
    run.add_argument("--kv-memory", default="512MiB", help="Trellis KV pool")
    run.add_argument("--run-timeout", type=float, default=900.0, help="seconds one (system, workload) may take")
    run.add_argument(
        "--llama-cpp-path",
        default=None,
        help="directory holding a llama_cpp package to use if the venv has none (put first on sys.path)",
    )
    run.add_argument("--update-benchmarks", action="store_true", help="also write docs/benchmarks/latest-run.md")
    run.add_argument("--note", action="append", default=[], help="a line quoted at the top of the report")
    wl = sub.add_parser("workloads", help="write the workload JSONL files only")
    wl.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    wl.add_argument("--seed", type=int, default=0)
    wl.add_argument("--out", type=Path, default=Path("results/bench/workloads"))
    rep = sub.add_parser("report", help="re-render report.md / plots from a results.json")
    rep.add_argument("results", type=Path)
    rep.add_argument("--update-benchmarks", action="store_true", help="also write docs/benchmarks/latest-run.md")
    rep.add_argument("--note", action="append", default=[], help="a line quoted at the top of the report")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # SIGTERM (e.g. from `timeout`) unwinds normally, so the workers and servers are closed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.command == "workloads":
        return _write_workloads(args)
    if args.command == "report":
        result = json.loads(args.results.read_text())
        result["notes"] = result.get("notes", []) + args.note
        _report(result, args.results.parent, result.get("command", "?"), args.update_benchmarks)
        return 0
    return _run(args, "python -m tools.bench " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))


def _write_workloads(args) -> int:
    from .requests import write_jsonl
    from .tokenizer import BenchTokenizer
    from .workloads import generate

    tokenizer = BenchTokenizer.load(default_gguf())
    for name in WORKLOADS:
        requests = generate(name, args.seed, PRESETS[args.preset][name], tokenizer)
        write_jsonl(requests, args.out / f"{name}-seed{args.seed}.jsonl")
        print(
            f"{name}: {len(requests)} requests, {sum(r.num_prompt_tokens for r in requests)} prompt tokens, "
            f"{sum(r.reusable_prefix_tokens for r in requests)} reusable"
        )
    return 0


def _run(args, command: str) -> int:
    from .harness import BenchConfig, run_comparison
    from .tokenizer import BenchTokenizer

    if args.llama_cpp_path:
        path = str(Path(args.llama_cpp_path).resolve())
        sys.path.insert(0, path)  # workers are spawned with this sys.path
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [path, os.environ.get("PYTHONPATH")]))
    unknown = [s for s in args.systems if s not in system_registry.SYSTEMS]
    if unknown:
        raise SystemExit(f"unknown system(s) {unknown}; known: {', '.join(system_registry.SYSTEMS)}")
    cache_dir = args.cache_dir
    q4 = default_gguf()
    needs_f32 = any("F32" in s or s == "llama.cpp-http" for s in args.systems)
    needs_bf16 = any("BF16" in s for s in args.systems)
    settings = {
        "gguf_q4": str(q4),
        "gguf_f32": str(converted_gguf(cache_dir, "F32") if needs_f32 else q4),
        "gguf_bf16": str(converted_gguf(cache_dir, "BF16") if needs_bf16 else q4),
        "threads": args.threads,
        "n_ctx": 2048,
        "log_dir": str(args.out / "logs"),
        "trellis_options": {"kv_memory": args.kv_memory, "compile_cache_dir": str((cache_dir / "jax").resolve())},
        "trellis_server_args": [
            "--kv-memory",
            args.kv_memory,
            "--compile-cache-dir",
            str((cache_dir / "jax").resolve()),
        ],
        "ports": {"trellis-http": 18431, "llama.cpp-http": 18432},
    }
    config = BenchConfig(
        out_dir=args.out,
        preset=args.preset,
        systems=args.systems,
        workloads=args.workloads,
        repeats=args.repeats,
        seed=args.seed,
        threads=args.threads,
        run_timeout_s=args.run_timeout,
        start_timeout_s=args.start_timeout,
        time_budget_s=args.time_budget,
        settings=settings,
    )
    result = run_comparison(config, BenchTokenizer.load(q4))
    result["command"] = command
    result["notes"] = args.note
    (args.out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    _report(result, args.out, command, args.update_benchmarks)
    return 0


def _report(result: dict, out_dir: Path, command: str, update_benchmarks: bool) -> None:
    from .report import markdown, update_section

    try:
        from .plots import write_plots

        plots = write_plots(result, out_dir)
    except ImportError as error:  # e.g. no matplotlib on a bare GPU image: tables only
        print(f"no plots: {error}")
        plots = []
    (out_dir / "report.md").write_text(markdown(result, command, [p.name for p in plots]))
    print((out_dir / "report.md").read_text())
    if update_benchmarks:
        DOCS_DIR.mkdir(parents=True, exist_ok=True)
        for plot in plots:
            shutil.copy(plot, DOCS_DIR / plot.name)
        rel = [f"../bench/{p.name}" for p in plots]  # relative to LATEST_RUN_MD
        update_section(LATEST_RUN_MD, markdown(result, command, rel), heading="# The latest `tools.bench` run")
        print(f"updated {LATEST_RUN_MD}; BENCHMARKS.md's headline table is updated by hand from it")


if __name__ == "__main__":
    sys.exit(main())
