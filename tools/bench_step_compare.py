"""bench_step's --compare-* modes: runners of one model that differ in one setting take the same plans one
step of each in turn (`alternate`), so load from neighbours hits them alike; and the tables they print.

Each compare_*(args) takes tools/bench_step.py's parsed flags (its CLI is the only one) and returns what
`compare_markdown` prints. Tools that build their own runners (bench_tp, bench_forward_ab) call `alternate`
and `compare_markdown` directly.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_step import TARGETS, decode_plans, load_bench_model, make_runner, pages_for, prefill_plan  # noqa: E402

from trellis_jax import layer_unroll  # noqa: E402
from trellis_jax.checkpoints import load_model  # noqa: E402


def warm_and_alternate(runners: dict, args) -> dict:
    """Compile every runner's buckets, one runner after another, then `alternate` them."""
    for runner in runners.values():
        runner.warmup()
    return alternate(runners, args)


def with_weight_bytes(results: dict, runners: dict) -> dict:
    """`results` with each runner's resident weight bytes (its prepared params) added as "weight_bytes"."""
    results["weight_bytes"] = {mode: params_bytes(runner.params) for mode, runner in runners.items()}
    return results


def compare_native(args) -> dict:
    """Native CPU kernels on vs off (TRELLIS_NATIVE=0 gives the pure-XLA paths), one step of each in turn.

    Both runners live in one process and alternate step by step, so load from neighbours hits both alike;
    the kernels are chosen at trace time, so the flag only has to be set while each runner compiles.
    """
    model = load_bench_model(args)
    runners = {}
    for mode, flag in (("native", "1"), ("xla", "0")):
        os.environ["TRELLIS_NATIVE"] = flag
        runners[mode] = make_runner(model, args)
        runners[mode].warmup()
    os.environ.pop("TRELLIS_NATIVE")
    return alternate(runners, args)


def compare_kv_dtype(args) -> dict:
    """float32 vs bfloat16 KV pages (same float32 model), alternating step by step in one process."""
    model = load_bench_model(args)
    runners = {kv: make_runner(model, args, kv_dtype=kv) for kv in ("float32", "bfloat16")}
    return warm_and_alternate(runners, args)


def compare_deterministic(args) -> dict:
    """Batch-invariant kernels (what --deterministic runs) vs the default ones, alternating step by step."""
    model = load_bench_model(args)
    runners = {mode: make_runner(model, args, batch_invariant=mode == "invariant") for mode in ("invariant", "default")}
    return warm_and_alternate(runners, args)


def compare_weight_format(args) -> dict:
    """A quantized GGUF's layer weights kept packed vs dequantized to --dtype at load, alternating step by
    step in one process; also each runner's resident weight bytes (its prepared params)."""
    runners = {
        fmt: make_runner(load_model(args.model, dtype=args.dtype, weight_format=fmt), args)
        for fmt in ("packed", "float")
    }
    return with_weight_bytes(warm_and_alternate(runners, args), runners)


def compare_quantization(args) -> dict:
    """The float model (--model loaded float in --dtype; a quantized GGUF dequantized) against its matrices
    quantized at load as --quantization int8 / int4 does (checkpoints/quantize.py), alternating step by
    step in one process; also each runner's resident weight bytes."""
    from trellis_jax.checkpoints.quantize import quantize_loaded

    model = load_model(args.model, dtype=args.dtype, weight_format="float")
    runners = {"float": make_runner(model, args)}
    for scheme in ("int8", "int4"):
        runners[scheme] = make_runner(quantize_loaded(model, scheme), args)
    return with_weight_bytes(warm_and_alternate(runners, args), runners)


def compare_unroll(args) -> dict:
    """The layer loop as --unroll-layers values (scan, N per iteration, full), alternating step by step in one
    process; also each runner's compile time, its programs compiled one after another (workers=1)."""
    model = load_bench_model(args)
    runners = {layer_unroll.describe(u): make_runner(model, args, unroll_layers=u) for u in args.compare_unroll}
    compiles = {mode: {"seconds": runner.warmup(progress=False, workers=1)} for mode, runner in runners.items()}
    for mode, runner in runners.items():
        compiles[mode]["programs"] = runner.num_compilations
    results = alternate(runners, args)
    results["compile"] = compiles
    return results


def compare_matmul_backend(args) -> dict:
    """The matmul backends calibration chose (auto) against each backend pinned for every matrix, alternating
    step by step; also what calibration timed per shape class and its seconds (0 when read from its store).
    Each runner compiles every bucket at warm-up, before the next one installs its own choice."""
    from pallas_kernels.matmul import calibrate

    model = load_bench_model(args)
    runners = {}
    for backend in ("auto", "native", "xla"):
        runners[backend] = make_runner(model, args, matmul_backend=backend)
        if backend == "auto":
            report = calibrate.last_report()
        runners[backend].warmup()
    results = alternate(runners, args)
    results["calibration"] = report
    return results


def calibration_markdown(report: dict) -> str:
    lines = [
        f"calibration: {report.get('seconds', 0):.2f} s ({'read from its store' if report.get('cached') else 'measured'})",
        "",
        "| group | row class | native ms | xla ms | chosen |",
        "|---|---|---|---|---|",
    ]
    for group, classes in report.get("timings", {}).items():
        for row_class, by_backend in classes.items():
            chosen = min(by_backend, key=by_backend.get)
            cells = " | ".join(f"{1000 * by_backend[b]:.2f}" if b in by_backend else "-" for b in ("native", "xla"))
            lines.append(f"| {group} | {row_class} | {cells} | {chosen} |")
    return "\n".join(lines)


def params_bytes(params) -> int:
    """Resident bytes of a param tree (packed weights count their codes, scales and mins)."""
    return sum(int(leaf.nbytes) for leaf in jax.tree.leaves(params))


def alternate(runners: dict, args) -> dict:
    """Median tok/s of each runner on the same prefill and decode plans, one step of each in turn; also the
    median process CPU ms per step ("cpu_ms"), which a loaded machine's neighbours disturb less than wall time."""
    steps = args.repeats + 1
    first_page = 1 + pages_for(args.prefill_tokens, args.page_size)
    vocab_size = next(iter(runners.values())).config.vocab_size
    work = {"prefill": [prefill_plan(args.prefill_tokens, args.page_size, vocab_size)] * steps}
    for batch in args.batches:
        work[f"decode_b{batch}"] = decode_plans(batch, args.context, steps, args.page_size, first_page)
    results, cpu_ms = {"loadavg_start": os.getloadavg()[0]}, {}
    for name, plans in work.items():
        walls, cpus = {mode: [] for mode in runners}, {mode: [] for mode in runners}
        order = list(runners.items())
        for i, plan in enumerate(plans):
            # rotated each step: a step right after a cache-thrashing one (an XLA dequantize) starts cold
            for mode, runner in order[i % len(order) :] + order[: i % len(order)]:
                start, cpu = time.perf_counter(), time.process_time()
                runner.run(plan)
                if i:  # the first step of each kind is a warm-up
                    walls[mode].append(time.perf_counter() - start)
                    cpus[mode].append(time.process_time() - cpu)
        tokens = args.prefill_tokens if name == "prefill" else int(name.split("_b")[1])
        results[name] = {mode: tokens / statistics.median(w) for mode, w in walls.items()}
        cpu_ms[name] = {mode: 1000 * statistics.median(c) for mode, c in cpus.items()}
    results["cpu_ms"] = cpu_ms
    results["loadavg_end"] = os.getloadavg()[0]
    results["compilations_after_warmup"] = {m: r.num_compilations - len(r.compiled_buckets) for m, r in runners.items()}
    return results


def compare_markdown(results: dict) -> str:
    if len(results["compilations_after_warmup"]) > 2 or "compile" in results:
        return compare_many_markdown(results)
    a, b = results["compilations_after_warmup"]
    sizes = results.get("weight_bytes")
    lines = [f"resident weights: {a} {sizes[a] / 2**20:.0f} MiB, {b} {sizes[b] / 2**20:.0f} MiB", ""] if sizes else []
    lines += [
        f"load average {results['loadavg_start']:.1f} -> {results['loadavg_end']:.1f}; compilations after "
        f"warm-up {results['compilations_after_warmup']}",
        "",
        f"| step | {a} tok/s | {b} tok/s | {a} / {b} | target |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if name == "prefill" or name.startswith("decode_"):
            lines.append(
                f"| {name} | {r[a]:.0f} | {r[b]:.0f} | {r[a] / r[b]:.2f}x | {TARGETS.get(name, float('nan')):.0f} |"
            )
    return "\n".join(lines)


def _ratio_row(label: str, values: dict, modes: list, fmt: str, lower_is_better: bool = False) -> str:
    """One table row: each mode's value, then each later mode's ratio to the first (oriented so > 1 is better)."""
    base = values[modes[0]]
    ratios = [base / values[m] if lower_is_better else values[m] / base for m in modes[1:]]
    cells = [format(values[m], fmt) for m in modes] + [f"{r:.2f}x" for r in ratios]
    return f"| {label} | " + " | ".join(cells) + " |"


def compare_many_markdown(results: dict) -> str:
    """Several runners: tok/s of each, and each one's ratio to the first."""
    modes = list(results["compilations_after_warmup"])
    base, sizes = modes[0], results.get("weight_bytes", {})
    lines = [
        f"load average {results['loadavg_start']:.1f} -> {results['loadavg_end']:.1f}; compilations after "
        f"warm-up {results['compilations_after_warmup']}",
        "",
        "| step | "
        + " | ".join(f"{m} tok/s" for m in modes)
        + " | "
        + " | ".join(f"{m} / {base}" for m in modes[1:])
        + " |",
        "|---|" + "---|" * (2 * len(modes) - 1),
    ]
    compiles = results.get("compile")
    if compiles:
        seconds = {m: compiles[m]["seconds"] / compiles[m]["programs"] for m in modes}
        lines.append(_ratio_row("compile s per program", seconds, modes, ".1f"))
    if sizes:
        lines.append(_ratio_row("weights MiB", {m: sizes[m] / 2**20 for m in modes}, modes, ".0f"))
    for name, r in results.items():
        if name == "prefill" or name.startswith("decode_"):
            lines.append(_ratio_row(name, r, modes, ".0f"))
    for name, ms in results.get("cpu_ms", {}).items():
        lines.append(_ratio_row(f"{name} CPU ms/step", ms, modes, ".1f", lower_is_better=True))
    return "\n".join(lines)
