"""The markdown report of a comparison run, its verdict against the issue's targets, and BENCHMARKS.md.

`markdown(result, command)` renders: how it was measured (command, machine, load, definitions), the
skipped systems and the misses, one table row per (workload, system) with medians over repeats, and
the targets: on each shared-prefix workload Trellis (cache on) must reach >= 2x the output tokens/s of
the best llama.cpp configuration and a lower p50 TTFT; on `no_share` it must be at least level with
llama.cpp F32. A missed target is printed as MISSED with the ratio — never hidden.
`update_section(path, text)` replaces (or appends) only the "Against other engines" section.
"""

from __future__ import annotations

import re
from pathlib import Path

from .systems import PINNED_DTYPES

SECTION_TITLE = "## Against other engines"
SHARED_WORKLOADS = ("shared_system", "multi_turn", "few_shot", "agentic")
MIB = 2**20


def markdown(result: dict, command: str, plots: list[str] = ()) -> str:
    notes = "\n>\n".join(f"> {line}" for line in result.get("notes", [])).splitlines()
    lines = [SECTION_TITLE, ""] + (notes + [""] if notes else []) + _preamble(result, command) + [""]
    lines += _table(result) + [""] + _agreement(result)
    if any(s.startswith("llama.cpp") for s in result["config"]["systems"]):
        lines += _targets(result) + [""]
    if result.get("micro"):
        lines += _micro(result["micro"]) + [""]
    lines += _definitions()
    lines += [""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines).rstrip() + "\n"


def _preamble(result, command) -> list[str]:
    m, c = result["machine"], result["config"]
    loads = [r["loadavg_1m"] for r in result["runs"]]
    load_range = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "n/a"
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v and k != "llama_cpp_location")
    model = c.get("settings", {}).get("model_description", "SmolLM2-135M-Instruct, from the same GGUF")
    out = [
        f"Same model ({model}), same prompts and token ids, greedy, every",
        "request generating exactly its `max_tokens` (EOS ignored/banned). Regenerate with:",
        "",
        "```",
        command,
        "```",
        "",
        f"Measured {m['started_utc']} UTC on {m['cpu_count']} cores ({m['processor'] or m['platform']})"
        + (f" and {m['gpu']}" if m.get("gpu") else "")
        + ", "
        f"threads per engine: {c['threads']}; 1-minute load average during the runs: {load_range} "
        f"(the machine was shared with other jobs: absolute numbers are noisy, ratios within one run less so). "
        f"Preset `{c['preset']}`, {c['repeats']} repeat(s) per cell (medians shown), systems alternating. "
        f"Versions: {versions}"
        + (f", repository at {m['commit']}" if m.get("commit") else "")
        + f". Token counts: {m['tokenizer']}.",
    ]
    if m["versions"].get("llama_cpp_location"):
        out.append(f"llama_cpp imported from `{m['versions']['llama_cpp_location']}`.")
    for name, why in result["skipped"].items():
        out.append(f"- skipped **{name}**: {why}")
    for miss in result["misses"]:
        where = miss.get("workload", miss.get("stage"))
        out.append(f"- MISS **{miss['system']}** ({where}): {miss['error'].strip().splitlines()[-1][:200]}")
    return out


def _table(result) -> list[str]:
    head = (
        "| workload | system | runs | out tok/s | req/s | TTFT p50 s | TTFT p99 s | prefill computed / skipped "
        "(ideal skip) | peak KV MiB | peak RSS MiB | cache hit |"
    )
    lines = [head, "|" + "---|" * 11]
    order = {n: i for i, n in enumerate(result["config"]["systems"])}
    rows = sorted(
        result["summary"],
        key=lambda r: (result["config"]["workloads"].index(r["workload"]), order.get(r["system"], 99)),
    )
    for r in rows:
        prefill = (
            "n/a" if r["prefill_computed"] is None else f"{r['prefill_computed']:,.0f} / {r['prefill_skipped']:,.0f}"
        ) + f" ({r['reusable_tokens']:,.0f})"
        lines.append(
            f"| {r['workload']} | {r['system']} | {r['repeats']} | {_throughput(r)} | "
            f"{r['requests_per_s']:.2f} | {r['ttft_p50_s']:.2f} | {r['ttft_p99_s']:.2f} | {prefill} | "
            f"{_mib(r['kv_peak_bytes'])} | {_mib(r['rss_peak_bytes'])} | {_pct(r['cache_hit_rate'])} |"
        )
    return lines


def _throughput(row) -> str:
    """Median output tok/s, and the spread of the repeats when there were several."""
    spread = row.get("output_tokens_per_s_range")
    median = f"{row['output_tokens_per_s']:.1f}"
    if not spread or row["repeats"] < 2:
        return median
    return f"{median} ({spread[0]:.1f}–{spread[1]:.1f})"


def _agreement(result) -> list[str]:
    from .agreement import agreement

    counts = agreement(result["runs"])
    if not counts:
        return []
    parts = [f"{system} {same}/{total}" for system, (same, total) in sorted(counts.items())]
    return [
        "Greedy agreement with transformers (requests whose output token ids are all identical; "
        "llama.cpp streams text, so it is not compared): " + ", ".join(parts) + ".",
        "",
    ]


# A Trellis model dtype -> the llama.cpp configuration in that precision (the no-sharing control's peer).
SAME_PRECISION_PEER = {"float32": "llama.cpp-F32", "bfloat16": "llama.cpp-BF16"}
# Trellis systems with the cache on, and the dtype each runs when the run did not record one ("trellis"
# takes the engine's dtype="auto"; results written before it existed ran float32).
TRELLIS_SYSTEMS = {"trellis": "float32", **PINNED_DTYPES}


def precision(result: dict, system: str) -> str:
    """The model dtype `system` ran in this result (recorded by its runner, else TRELLIS_SYSTEMS')."""
    return (result.get("systems", {}).get(system) or {}).get("precision") or TRELLIS_SYSTEMS[system]


# The llama.cpp models issue 7 names for the shared-prefix targets ("Q4_1 or F32"); the bench also runs BF16.
ISSUE_PEER_MODELS = ("-F32", "-Q4_1")


def verdicts(result: dict, system: str = "trellis", issue_peers_only: bool = False) -> list[dict]:
    """One verdict per workload: `system` (a Trellis variant, cache on) against the best llama.cpp
    configuration (every one run, or with issue_peers_only the F32 and Q4_1 ones); on the control,
    against llama.cpp in the same precision."""
    rows = {(r["system"], r["workload"]): r for r in result["summary"]}
    out = []
    for workload in result["config"]["workloads"]:
        trellis = rows.get((system, workload))
        if workload in SHARED_WORKLOADS:
            peers = [
                r
                for (s, w), r in rows.items()
                if w == workload
                and s.startswith("llama.cpp-")
                and s != "llama.cpp-http"
                and (not issue_peers_only or any(m in s for m in ISSUE_PEER_MODELS))
            ]
            need = 2.0
        else:
            peers = [r for key in [(SAME_PRECISION_PEER[precision(result, system)], workload)] if (r := rows.get(key))]
            need = 1.0
        if trellis is None or not peers:
            out.append({"workload": workload, "status": "NOT MEASURED", "detail": "Trellis or llama.cpp missing"})
            continue
        best = max(peers, key=lambda r: r["output_tokens_per_s"])
        ratio = trellis["output_tokens_per_s"] / best["output_tokens_per_s"]
        ttft_ok = workload not in SHARED_WORKLOADS or trellis["ttft_p50_s"] < min(p["ttft_p50_s"] for p in peers)
        met = ratio >= need and ttft_ok
        out.append(
            {
                "workload": workload,
                "status": "met" if met else "MISSED",
                "ratio": ratio,
                "need": need,
                "best_peer": best["system"],
                "ttft_ok": ttft_ok,
                "trellis_ttft": trellis["ttft_p50_s"],
                "peer_ttft": min(p["ttft_p50_s"] for p in peers),
            }
        )
    return out


def _targets(result) -> list[str]:
    lines = [
        "Targets (issue 7): shared-prefix workloads need Trellis (cache on) >= 2.0x the output tok/s of the best",
        "llama.cpp configuration and a lower p50 TTFT than every llama.cpp configuration; `no_share` needs >= 1.0x",
        "llama.cpp in the same precision (F32 for a float32 model, BF16 for a bfloat16 one). `trellis` is the",
        "engine's defaults (dtype and weight format auto: a quantized GGUF stays packed); `trellis-f32` and",
        "`trellis-bf16` pin the model dtype, with float weights (the GGUF dequantized to that dtype).",
    ]
    for system in TRELLIS_SYSTEMS:
        if system == "trellis" or system in result["config"]["systems"]:
            lines += _target_table(result, system)
    return lines


def _target_table(result, system: str) -> list[str]:
    lines = [
        "",
        f"`{system}` ({precision(result, system)} model):",
        "",
        "| workload | verdict vs every llama.cpp config | Trellis / best llama.cpp tok/s | needed | "
        "p50 TTFT Trellis vs best llama.cpp | verdict vs F32/Q4_1 only (the issue's list) |",
        "|---|---|---|---|---|---|",
    ]
    for v, w in zip(verdicts(result, system), verdicts(result, system, issue_peers_only=True)):
        if v["status"] == "NOT MEASURED":
            lines.append(f"| {v['workload']} | NOT MEASURED | {v['detail']} | | | |")
            continue
        lines.append(
            f"| {v['workload']} | {v['status']} | {v['ratio']:.2f}x (vs {v['best_peer']}) | {v['need']:.1f}x | "
            f"{v['trellis_ttft']:.2f}s vs {v['peer_ttft']:.2f}s{'' if v['ttft_ok'] else ' (MISSED)'} | "
            f"{_issue_verdict(w)} |"
        )
    return lines


def _issue_verdict(v: dict) -> str:
    if v["status"] == "NOT MEASURED":
        return "NOT MEASURED"
    ttft = "" if v["ttft_ok"] else f"; TTFT {v['trellis_ttft']:.2f}s vs {v['peer_ttft']:.2f}s MISSED"
    return f"{v['status']}: {v['ratio']:.2f}x vs {v['best_peer']}{ttft}"


def _definitions() -> list[str]:
    return [
        "Definitions: *TTFT* from the moment a request's wave is submitted (all requests of a wave arrive",
        "together; a chat's next turn or an agent's forks arrive when the previous wave has finished), so it",
        "includes queueing — llama.cpp and transformers serve one request at a time. *out tok/s* and *req/s*",
        "over the run's wall time (out tok/s: median, and the lowest–highest repeat in parentheses).",
        "*prefill computed / skipped*: prompt tokens evaluated vs reused, summed over",
        "the run (n/a where the system does not report it, e.g. over HTTP without usage details); *ideal skip*",
        "is the most any prefix cache could reuse (each prompt's longest common prefix with an earlier prompt).",
        "*peak KV*: Trellis = pages in use x page bytes (pool preallocated); transformers = live + stored",
        "DynamicCaches; llama.cpp = its n_ctx context KV (f16, allocated up front) + LlamaRAMCache size; HTTP",
        "systems: not separable, see RSS. *peak RSS* of the engine's process (the server's for HTTP).",
        "*cache hit*: Trellis' cached prompt tokens / prompt tokens in the run.",
    ]


def _mib(value) -> str:
    if value is None:
        return "n/a"
    return f"{value / MIB:,.1f}" if value < 10 * MIB else f"{value / MIB:,.0f}"


# The issue's reference figures on the H200 (transformers 5.17 eager bf16) and Trellis' targets there.
MICRO_REFERENCE = {
    "prefill_ms_median": (19.3, "<= 12"),
    "decode_tok_s_batch1": (88.6, ">= 800"),
    "decode_tok_s_batch32": (2826.0, ">= 10,000"),
}


def _micro(micro: dict) -> list[str]:
    lines = [
        "Micro-benchmarks (prefill of one prompt; greedy decode rates after the first token):",
        "",
        "| metric | Trellis | transformers (measured) | transformers reference (issue) | Trellis target |",
        "|---|---|---|---|---|",
    ]
    trellis, hf = micro.get("trellis", {}), {**micro.get("hf", {}), **micro.get("hf-batch32", {})}
    for key, (reference, target) in MICRO_REFERENCE.items():

        def fmt(d):
            value = d.get(key)  # noqa: B023 (called at once, inside the loop)
            return "error" if "error" in d and value is None else ("n/a" if value is None else f"{value:,.1f}")

        label = key.replace("prefill_ms_median", f"prefill {trellis.get('prefill_tokens', '?')} tokens, ms")
        lines.append(f"| {label} | {fmt(trellis)} | {fmt(hf)} | {reference:,.1f} | {target} |")
    return lines


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def update_section(path: Path, text: str, heading: str = "# Benchmarks") -> None:
    """Replace the '## Against other engines' section of `path` (up to the next '## '), or append it (to a
    new page titled `heading` when `path` does not exist yet)."""
    path = Path(path)
    doc = path.read_text() if path.exists() else heading + "\n"
    pattern = re.compile(rf"^{re.escape(SECTION_TITLE)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: text.rstrip() + "\n\n", doc, count=1)
    else:
        doc = doc.rstrip() + "\n\n" + text
    path.write_text(doc.rstrip() + "\n")
