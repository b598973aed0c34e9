"""``python -m trellis_jax.ablate``: run an ablation grid and write CSV, JSON, PNG plots and a summary.

Examples::

    python -m trellis_jax.ablate --workload zipf_flush --workload multi_turn --out results/ablate
    python -m trellis_jax.ablate --trace my_trace.jsonl --capacities 256,1024,4096 --page-sizes 1,16
    python -m trellis_jax.ablate --chat-log chats.jsonl --tokenizer default --policies lru,arc
    python -m trellis_jax.ablate --policy-module my_policies --policies lru,my_policy --workload few_shot
    python -m trellis_jax.ablate --workload multi_turn --l2-pages 4096 --l3-pages 64GiB --disk-read-bw 2e9

Outputs in ``--out``: ``rows.csv``, ``rows.json`` (every metric of every cell), ``summary.md`` (tables,
plots linked), ``plots/<workload>_p<page size>.png`` (and ``plots/tiers_...png`` with tiers). Traces: ``--workload`` (see ``workloads.py``),
``--trace`` (JSONL, ``trace.py``), ``--chat-log`` (OpenAI message lists, ``chatlog.py``); text needs
``--tokenizer`` (``default`` = the engine's default model, a GGUF file or an HF directory).
Tiers (``--l2-pages``, ``--l3-pages`` and the rates; ``tiers.py``): each cell's pool is L1, with a
simulated host RAM and disk below it; ``summary.md`` gains a tier table per group.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from trellis_jax.ablate import policies as _example_policies  # noqa: F401  (registers "arc")
from trellis_jax.ablate.chatlog import read_chat_log
from trellis_jax.ablate.grid import GridSpec, run_grid
from trellis_jax.ablate.plots import plot_grid
from trellis_jax.ablate.report import markdown_summary, read_json, write_csv, write_json
from trellis_jax.ablate.tier_plots import plot_tier_grid
from trellis_jax.ablate.tiers import TierConfig, parse_capacity, parse_rate
from trellis_jax.ablate.trace import Trace, read_jsonl, write_jsonl
from trellis_jax.ablate.workloads import WORKLOADS, workload
from trellis_jax.cli import new_parser

DEFAULT_POLICIES = "lru,lfu,fifo,mru,slru,cost_aware,arc"


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    p = new_parser("trellis-ablate", __doc__.split("\n\n")[0], raw_description=True)
    src = p.add_argument_group("trace (give at least one)")
    src.add_argument(
        "--workload",
        action="append",
        default=[],
        choices=WORKLOADS,
        help="a built-in synthetic workload (repeatable; default: none)",
    )
    src.add_argument(
        "--trace", action="append", default=[], type=Path, help="JSONL trace file (repeatable; default: none)"
    )
    src.add_argument(
        "--chat-log",
        action="append",
        default=[],
        type=Path,
        help="JSONL of chat message lists (repeatable; default: none)",
    )
    src.add_argument("--tokenizer", help="'default', a GGUF file or an HF directory (text traces; default: none)")
    src.add_argument("--scale", type=float, default=1.0, help="request-count multiplier for --workload")
    src.add_argument("--seed", type=int, default=0, help="seed of the synthetic workloads")
    src.add_argument(
        "--shared-namespace",
        action="append",
        default=[],
        help="namespace shared by all tenants (repeatable; default: none)",
    )
    grid = p.add_argument_group("grid")
    grid.add_argument(
        "--policies", type=_names, default=_names(DEFAULT_POLICIES), help="eviction policies, comma-separated"
    )
    grid.add_argument(
        "--policy-module",
        action="append",
        default=[],
        help="module to import (registers policies; repeatable; default: none)",
    )
    grid.add_argument("--capacities", type=_ints, help="pages (default: a ladder up to the working set)")
    grid.add_argument("--page-sizes", type=_ints, default=(16,), help="page sizes, comma-separated")
    grid.add_argument("--orders", type=_names, default=("fcfs", "lpm"), help="fcfs, lpm, dfs")
    grid.add_argument("--window", type=int, default=16, help="lpm: waiting requests considered")
    grid.add_argument("--max-batch", type=int, default=1, help="requests admitted before any finishes")
    grid.add_argument("--no-optimal", action="store_true", help="skip the offline optimal bound")
    _add_tier_flags(p)
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, default=Path("results/ablate"), help="output directory")
    out.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    out.add_argument("--save-traces", action="store_true", help="also write each trace as JSONL in --out")
    out.add_argument(
        "--from-rows", type=Path, help="re-render summary and plots from a rows.json, no replay (default: none)"
    )
    return p


def _capacity(text: str):
    try:
        return parse_capacity(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _rate(text: str) -> float:
    try:
        return parse_rate(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# flag -> (TierConfig field, help); the rates default to TierConfig's and need a tier to act on
_TIER_RATES = {
    "--host-bw": ("host_bytes_per_s", "host<->device bytes/s (L2 reloads and write-back; L3 reloads pass it too)"),
    "--disk-read-bw": ("disk_read_bytes_per_s", "disk read bytes/s (L3 reloads)"),
    "--disk-write-bw": ("disk_write_bytes_per_s", "disk write bytes/s (L3 write-back, reported only)"),
    "--prefill-tok-s": ("prefill_tokens_per_s", "prefill tokens/s: the recompute cost reloads compete with"),
    "--kv-bytes-per-token": ("kv_bytes_per_token", "KV bytes per token (all layers, K and V)"),
}


def _add_tier_flags(p: argparse.ArgumentParser) -> None:
    tiers = p.add_argument_group("tiers (simulated below each cell's pool, the L1; default: none)")
    tiers.add_argument("--l2-pages", type=_capacity, help="host RAM tier: pages (4096) or a size (8GiB)")
    tiers.add_argument("--l3-pages", type=_capacity, help="disk tier: pages or a size (64GiB)")
    defaults = TierConfig()
    for flag, (field, text) in _TIER_RATES.items():
        kind = int if field == "kv_bytes_per_token" else _rate
        tiers.add_argument(flag, type=kind, help=f"{text} (default: {getattr(defaults, field):g})")


def tier_config(args, parser: argparse.ArgumentParser) -> TierConfig | None:
    """The ``TierConfig`` the tier flags ask for; None without ``--l2-pages`` / ``--l3-pages``."""
    rates = {field: getattr(args, field_of(flag)) for flag, (field, _) in _TIER_RATES.items()}
    rates = {k: v for k, v in rates.items() if v is not None}
    if args.l2_pages is None and args.l3_pages is None:
        if rates:
            parser.error(f"{', '.join(_TIER_RATES)} need a tier: give --l2-pages and/or --l3-pages")
        return None
    zero = parse_capacity("0")
    try:
        return TierConfig(args.l2_pages or zero, args.l3_pages or zero, **rates)
    except ValueError as e:
        parser.error(str(e))


def field_of(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def load_tokenizer(spec: str | None):
    if spec is None:
        return None
    from trellis_jax.tokenizer import Tokenizer

    if spec == "default":
        from trellis_jax.checkpoints.default_model import default_gguf_path

        return Tokenizer.from_gguf(default_gguf_path())
    path = Path(spec)
    return Tokenizer.from_hf_dir(path) if path.is_dir() else Tokenizer.from_gguf(path)


def load_traces(args) -> list[Trace]:
    tokenizer = load_tokenizer(args.tokenizer)
    shared = frozenset(args.shared_namespace)
    traces = [workload(name, args.seed, args.scale) for name in args.workload]
    traces += [read_jsonl(path, tokenizer, shared) for path in args.trace]
    traces += [read_chat_log(path, tokenizer, shared_namespaces=shared) for path in args.chat_log]
    if not traces:
        raise SystemExit("give a trace: --workload, --trace or --chat-log (see --help)")
    return traces


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tiers = tier_config(args, parser)
    if tiers and args.from_rows:
        parser.error("--from-rows re-renders saved rows: tier flags would not be applied; drop them")
    for module in args.policy_module:
        importlib.import_module(module)
    spec = GridSpec(
        args.policies,
        args.capacities,
        args.page_sizes,
        args.orders,
        args.window,
        args.max_batch,
        with_optimal=not args.no_optimal,
        tiers=tiers,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_rows:
        rows = read_json(args.from_rows)
    else:
        traces = load_traces(args)
        if tiers and any(t.shared_namespaces for t in traces):
            parser.error("the tier simulation does not model shared namespaces (--shared-namespace)")
        rows = run_traces(traces, spec, args.out if args.save_traces else None)
        write_csv(rows, args.out / "rows.csv")
        write_json(rows, args.out / "rows.json", meta={"argv": sys.argv[1:] if argv is None else argv})
    plots = {} if args.no_plots else plot_grid(rows, args.out / "plots") | plot_tier_grid(rows, args.out / "plots")
    relative = {k: p.relative_to(args.out) for k, p in plots.items()}
    (args.out / "summary.md").write_text(markdown_summary(rows, plots=relative))
    print(f"wrote {args.out}/rows.csv, rows.json, summary.md" + (", plots/" if plots else ""), file=sys.stderr)
    return 0


def run_traces(traces: list[Trace], spec: GridSpec, save_dir: Path | None) -> list[dict]:
    rows = []
    for trace in traces:
        if save_dir is not None:
            write_jsonl(trace, save_dir / f"{trace.name}.jsonl")
        start = time.perf_counter()
        rows += run_grid(trace, spec, progress=_print_row)
        print(f"{trace.name}: {len(trace)} requests, grid in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return rows


def _print_row(row: dict) -> None:
    frac = row.get("fraction_of_optimal")
    print(
        f"  {row['workload']:>14} p{row['page_size']:<3} {row['order']:>4} {row['policy']:>10} "
        f"cap {row['capacity_pages']:>7}: hit {100 * row['hit_rate']:5.1f}%"
        + (f" ({100 * frac:5.1f}% of opt)" if frac is not None else "")
        + f"  {row['wall_s']:.2f}s",
        file=sys.stderr,
    )
