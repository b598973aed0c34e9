"""Grid results on disk: CSV and JSON (every row, every metric) and a markdown summary.

The markdown summary opens with a league table (per order and policy, means over all cells) and has
one table per workload x page size x order: a row per policy, a column per capacity, each cell ``hit
rate (fraction of the offline optimum for that cell's order)``, then the bounds, and a line per
capacity naming the best policy. The bounds are the ones the fractions divide by (``own_order_bounds``,
drawn by the plots too): for each policy, the optimum for the order its replay actually served; one row
when every policy served the same order. The clairvoyant policy runs in arrival order: fcfs tables only.
Rows of a tiered grid add a tier table per group (``tier_rows.tier_table``).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

from trellis_jax.ablate.tier_rows import tier_table


def write_csv(rows: list[dict], path: str | Path) -> None:
    if not rows:
        raise ValueError("no rows to write")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_json(rows: list[dict], path: str | Path, meta: dict | None = None) -> None:
    Path(path).write_text(json.dumps({"meta": meta or {}, "rows": rows}, indent=1))


def read_json(path: str | Path) -> list[dict]:
    return json.loads(Path(path).read_text())["rows"]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def group_rows(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Rows by (workload, page_size, order), in first-seen order."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["workload"], row["page_size"], row["order"])].append(row)
    return groups


def own_order_bounds(rows: list[dict]) -> dict[str | None, dict[int, float]]:
    """The offline optimal bounds of one group (rows of one workload x page size x order): {policy: {capacity:
    bound for the order that policy's replay served the requests in}}, i.e. the ``optimal_hit_rate`` each cell's
    ``fraction_of_optimal`` divides by. A single entry keyed None when every policy has the same bound (an order
    the cache does not change: fcfs, dfs); {} for rows without bounds (``with_optimal=False``)."""
    by_policy: dict[str, dict[int, float]] = defaultdict(dict)
    for r in rows:
        if r.get("optimal_hit_rate") is not None:
            by_policy[r["policy"]][r["capacity_pages"]] = r["optimal_hit_rate"]
    curves = list(by_policy.values())
    if curves and all(curve == curves[0] for curve in curves):
        return {None: curves[0]}
    return dict(by_policy)


def order_name(order: str) -> str:
    return "arrival order" if order == "fcfs" else f"{order} order"


def markdown_table(rows: list[dict]) -> str:
    """One table (rows of one workload x page size x order)."""
    capacities = sorted({r["capacity_pages"] for r in rows})
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    cell = {(r["policy"], r["capacity_pages"]): r for r in rows}
    lines = ["| policy | " + " | ".join(f"{c} pages" for c in capacities) + " |", "|---" * (len(capacities) + 1) + "|"]
    for policy in policies:
        values = []
        for c in capacities:
            r = cell.get((policy, c))
            frac = r.get("fraction_of_optimal") if r else None
            values.append(
                ""
                if r is None
                else _pct(r["hit_rate"])
                + (f" ({_pct(frac)})" if frac is not None else "")
                + (f" [{r['rejected']} rejected]" if r["rejected"] else "")
            )
        lines.append(f"| {policy} | " + " | ".join(values) + " |")
    order = rows[0]["order"]
    if order == "fcfs":
        lines.append(
            _bound_row(
                "clairvoyant (feasible), arrival order",
                {r["capacity_pages"]: r.get("fcfs_clairvoyant_hit_rate") for r in rows},
                capacities,
            )
        )
    for policy, bound in own_order_bounds(rows).items():
        whose = "" if policy is None else f"{policy}'s "
        lines.append(_bound_row(f"optimal bound, {whose}{order_name(order)}", bound, capacities))
    lines.append(
        _bound_row("ceiling, any order", {r["capacity_pages"]: r["ceiling_hit_rate"] for r in rows}, capacities)
    )
    best = [
        max((r for r in rows if r["capacity_pages"] == c), key=lambda r: r["hit_rate"])["policy"] for c in capacities
    ]
    lines.append("| *best policy* | " + " | ".join(best) + " |")
    return "\n".join(lines)


def _bound_row(label: str, by_capacity: dict[int, float | None], capacities: list[int]) -> str:
    return f"| *{label}* | " + " | ".join(_pct(by_capacity.get(c)) for c in capacities) + " |"


def league_table(rows: list[dict]) -> str:
    """Per order and policy, means over every cell where something could hit: fraction of the offline
    optimum (same order), fraction of the ceiling, hit rate; and how many cells the policy won."""
    rows = [r for r in rows if r.get("ceiling_hit_rate")]
    wins: dict[tuple, int] = defaultdict(int)
    by_cell: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        by_cell[(r["workload"], r["page_size"], r["order"], r["capacity_pages"])].append(r)
    for cell in by_cell.values():
        best = max(r["hit_rate"] for r in cell)
        for r in cell:
            wins[(r["order"], r["policy"])] += r["hit_rate"] == best
    lines = [
        "| order | policy | mean % of optimum | mean % of ceiling | mean hit rate | cells won |",
        "|---|---|---|---|---|---|",
    ]
    keys = list(dict.fromkeys((r["order"], r["policy"]) for r in rows))
    for order, policy in keys:
        group = [r for r in rows if (r["order"], r["policy"]) == (order, policy)]
        fractions = [r["fraction_of_optimal"] for r in group if r.get("fraction_of_optimal") is not None]
        mean_opt = sum(fractions) / len(fractions) if fractions else None
        mean_ceiling = sum(r["hit_rate"] / r["ceiling_hit_rate"] for r in group) / len(group)
        mean_hit = sum(r["hit_rate"] for r in group) / len(group)
        lines.append(
            f"| {order} | {policy} | {_pct(mean_opt)} | {_pct(mean_ceiling)} | {_pct(mean_hit)} | "
            f"{wins[(order, policy)]}/{len([c for c in by_cell if c[2] == order])} |"
        )
    return "\n".join(lines)


def markdown_summary(rows: list[dict], title: str = "Cache-policy ablation", plots: dict | None = None) -> str:
    """The whole summary: one section per group; ``plots`` maps (workload, page_size) to an image path."""
    out = [
        f"# {title}",
        "",
        "Cells: token hit rate (in brackets: fraction of the offline optimum for the order that cell "
        "actually served requests in). Capacities in pages.",
        "",
        "## All workloads",
        "",
        league_table(rows),
        "",
    ]
    seen_plots = set()
    for (workload, page_size, order), group in group_rows(rows).items():
        r0 = group[0]
        out.append(f"## {workload} — page size {page_size}, order {order}")
        out.append(f"{r0['num_requests']} requests, {r0['prompt_tokens']} prompt tokens.")
        out.append("")
        out.append(markdown_table(group))
        out.append("")
        if "l2_hit_rate" in r0:
            out += ["Tiers (hits served from each tier; bounds for tiers 1, 1..2, 1..3; see docs/ablation.md):", ""]
            out += [tier_table(group), ""]
            tier_key = (workload, page_size, "tiers")
            if plots and tier_key in plots and tier_key not in seen_plots:
                seen_plots.add(tier_key)
                out += [f"![{workload}, page size {page_size}, tiers]({plots[tier_key]})", ""]
        key = (workload, page_size)
        if plots and key in plots and key not in seen_plots:
            seen_plots.add(key)
            out.append(f"![{workload}, page size {page_size}]({plots[key]})")
            out.append("")
    return "\n".join(out)
