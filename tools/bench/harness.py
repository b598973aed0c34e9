"""The comparison run: every available system on every workload, alternating, repeated.

`run_comparison(config)`:
1. says which systems it found and which it skips (and why), one line each;
2. starts one worker per system (load + warm-up, untimed);
3. for each repeat r and workload w (generated with seed + r, so no run can reuse an earlier run's
   prompts), runs every system in an order rotated by (r, w) — systems alternate instead of running
   back to back — and records per-run metrics plus the 1-minute load average at that moment;
4. writes `results.json` (machine, config, every run, medians per (system, workload), skips, misses).
A system whose worker fails to start or dies is reported as a miss, never silently dropped.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import systems as system_registry
from .metrics import run_metrics, summarize
from .requests import write_jsonl
from .runners.base import RequestResult
from .runners.llamacpp import DEFAULT_THREADS
from .worker import Worker, WorkerError
from .workloads import PRESETS, WORKLOADS, generate


@dataclass
class BenchConfig:
    out_dir: Path
    preset: str = "cpu"
    systems: tuple[str, ...] = system_registry.SYSTEMS
    workloads: tuple[str, ...] = WORKLOADS
    repeats: int = 2
    seed: int = 0
    threads: int = DEFAULT_THREADS
    run_timeout_s: float = 900.0
    start_timeout_s: float = 3600.0
    time_budget_s: float | None = None  # after this, no new run starts; the rest are listed as not run
    settings: dict = field(default_factory=dict)  # passed to systems.build in each worker


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_comparison(config: BenchConfig, tokenizer) -> dict:
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    skipped = {s: why for s in config.systems if (why := system_registry.missing(s))}
    for name, why in skipped.items():
        log(f"skip {name}: {why}")
    workers, misses = _start_workers(
        [s for s in config.systems if s not in skipped], config.settings, config.start_timeout_s
    )
    log(f"systems in this run: {', '.join(workers) or 'none'}")
    machine = _machine(tokenizer)
    runs, deadline = [], time.monotonic() + (config.time_budget_s or float("inf"))
    try:
        for repeat in range(config.repeats):
            for wi, workload in enumerate(config.workloads):
                requests = generate(workload, config.seed + repeat, PRESETS[config.preset][workload], tokenizer)
                write_jsonl(requests, out / "workloads" / f"{workload}-seed{config.seed + repeat}.jsonl")
                for name in _rotated(list(workers), repeat + wi):
                    if time.monotonic() > deadline:
                        misses.append(
                            {
                                "system": name,
                                "workload": workload,
                                "repeat": repeat,
                                "error": "not run: the time budget (--time-budget) was spent",
                            }
                        )
                        continue
                    run = _one_run(workers, misses, name, workload, repeat, requests, config.run_timeout_s)
                    if run is not None:
                        runs.append(run)
    finally:
        for worker in workers.values():
            worker.close()
    machine["loadavg_end"] = os.getloadavg()
    summary = summarize(runs)
    result = {
        "machine": machine,
        "config": _config_dict(config),
        "skipped": skipped,
        "misses": misses,
        "systems": {n: w.info for n, w in workers.items()},
        "runs": runs,
        "summary": [{"system": s, "workload": w, **row} for (s, w), row in summary.items()],
    }
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    return result


def _start_workers(names, settings, timeout_s):
    workers, misses = {}, []
    for name in names:
        log(f"starting {name} (load + warm-up)...")
        started = time.perf_counter()
        try:
            workers[name] = Worker(name, settings, timeout_s)
            log(f"  {name} ready in {time.perf_counter() - started:.0f}s: {workers[name].info['description']}")
        except WorkerError as error:
            log(f"  {name} did not start: {str(error).splitlines()[-1]}")
            misses.append({"system": name, "stage": "start", "error": str(error)[-2000:]})
    return workers, misses


def _one_run(workers, misses, name, workload, repeat, requests, timeout_s):
    load_before = os.getloadavg()[0]
    try:
        raw = workers[name].run(requests, timeout_s)
    except WorkerError as error:
        log(f"  {name} failed on {workload}: {str(error).splitlines()[-1]}")
        misses.append({"system": name, "workload": workload, "repeat": repeat, "error": str(error)[-2000:]})
        if not workers[name]._proc.is_alive():
            workers.pop(name).close()
        return None
    results = [RequestResult(**r) for r in raw["results"]]
    metrics = run_metrics(
        results,
        raw["wall_s"],
        reusable_tokens=sum(r.reusable_prefix_tokens for r in requests),
        kv_peak_bytes=raw["kv_peak_bytes"],
        rss_peak_bytes=raw["rss_peak_bytes"],
        cache_hit_rate=raw["stats"].get("cache_hit_rate"),
    )
    if metrics["cache_hit_rate"] is None and name.startswith("trellis") and metrics["prefill_skipped"] is not None:
        # Over HTTP the hit rate comes from the usage's cached_tokens (no scheduler counters there).
        metrics["cache_hit_rate"] = metrics["prefill_skipped"] / metrics["prompt_tokens"]
    log(
        f"  {workload:13s} r{repeat} {name:24s} {metrics['output_tokens_per_s']:7.1f} tok/s  "
        f"{metrics['requests_per_s']:5.2f} req/s  TTFT p50 {metrics['ttft_p50_s']:.2f}s  load {load_before:.1f}"
    )
    return {
        "system": name,
        "workload": workload,
        "repeat": repeat,
        "loadavg_1m": load_before,
        "stats": raw["stats"],
        "results": raw["results"],
        **metrics,
    }


def _rotated(items: list, k: int) -> list:
    if not items:
        return items
    k %= len(items)
    return items[k:] + items[:k]


def _machine(tokenizer) -> dict:
    import importlib.metadata as md
    import importlib.util

    versions = {}
    for package in ("trellis-jax", "jax", "jaxlib", "torch", "transformers", "llama_cpp_python"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    spec = importlib.util.find_spec("llama_cpp")
    versions["llama_cpp_location"] = os.path.dirname(spec.origin) if spec and spec.origin else None
    return {
        "cpu_count": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "gpu": _gpu_name(),
        "commit": _commit(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "versions": versions,
        "tokenizer": tokenizer.source,
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def _commit() -> str | None:
    import subprocess

    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.abspath(__file__)),
    )
    return out.stdout.strip() or None


def _gpu_name() -> str | None:
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    return out.stdout.strip() or None


def _config_dict(config: BenchConfig) -> dict:
    return {
        "preset": config.preset,
        "systems": list(config.systems),
        "workloads": list(config.workloads),
        "repeats": config.repeats,
        "seed": config.seed,
        "threads": config.threads,
        "sizes": {w: PRESETS[config.preset][w] for w in config.workloads},
        "settings": config.settings,
    }
