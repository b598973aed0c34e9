"""Per-run metrics from `RequestResult`s, and their medians over repeats.

A run is one (system, workload, repeat). Its metrics: TTFT p50/p99 (seconds, from arrival, nearest-rank
percentiles), requests/s and output tokens/s over the run's wall time (first arrival to last finish),
prefill tokens computed vs skipped (skipped = prompt - computed; None when the system does not report
computed tokens), peak KV bytes and peak RSS. `summarize(runs)` groups runs by (system, workload) and
takes the median of every numeric metric over the repeats; the TTFT samples of all repeats are kept for
the distribution plots.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

NUMERIC = (
    "ttft_p50_s",
    "ttft_p99_s",
    "requests_per_s",
    "output_tokens_per_s",
    "prefill_computed",
    "prefill_skipped",
    "reusable_tokens",
    "kv_peak_bytes",
    "rss_peak_bytes",
    "cache_hit_rate",
    "wall_s",
)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]; raises on an empty list."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def run_metrics(
    results, wall_s: float, *, reusable_tokens: int, kv_peak_bytes, rss_peak_bytes, cache_hit_rate=None
) -> dict:
    if not results or wall_s <= 0:
        raise ValueError(f"a run needs results and a positive wall time (got {len(results)}, {wall_s})")
    ttfts = [r.first_token_s - r.arrival_s for r in results]
    prompt = sum(r.num_prompt_tokens for r in results)
    known = all(r.prompt_tokens_computed is not None for r in results)
    computed = sum(r.prompt_tokens_computed for r in results) if known else None
    return {
        "num_requests": len(results),
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p99_s": percentile(ttfts, 99),
        "ttfts_s": ttfts,
        "requests_per_s": len(results) / wall_s,
        "output_tokens_per_s": sum(r.num_output_tokens for r in results) / wall_s,
        "prompt_tokens": prompt,
        "prefill_computed": computed,
        "prefill_skipped": None if computed is None else prompt - computed,
        "reusable_tokens": reusable_tokens,
        "kv_peak_bytes": kv_peak_bytes,
        "rss_peak_bytes": rss_peak_bytes,
        "cache_hit_rate": cache_hit_rate,
        "wall_s": wall_s,
    }


def summarize(runs: list[dict]) -> dict[tuple[str, str], dict]:
    """{(system, workload): medians over repeats + all TTFT samples + the repeat count + the lowest and
    highest output tok/s of the repeats (`output_tokens_per_s_range`, so a report can show the spread)}."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run["system"], run["workload"])].append(run)
    summary = {}
    for key, group in groups.items():
        row = {"repeats": len(group), "ttfts_s": [t for run in group for t in run["ttfts_s"]]}
        for name in NUMERIC:
            values = [run[name] for run in group if run.get(name) is not None]
            row[name] = statistics.median(values) if values else None
        throughputs = [run["output_tokens_per_s"] for run in group if run.get("output_tokens_per_s") is not None]
        row["output_tokens_per_s_range"] = [min(throughputs), max(throughputs)] if throughputs else None
        summary[key] = row
    return summary
