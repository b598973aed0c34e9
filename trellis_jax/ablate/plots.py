"""PNG plots of a grid: hit rate vs capacity, one curve per policy, the offline optimum dashed.

One figure per workload x page size, one panel per scheduling order. In every panel the dashed black
line is the offline optimum bound for arrival order (``fcfs_optimal_hit_rate``), the dash-dotted line
what a clairvoyant policy achieves through the real tree in that order (the true optimum lies between
the two), and the dotted grey line the ceiling for any order and capacity. A reordering scheduler (``lpm``) can beat the arrival-order optimum:
its own per-cell optimum is in the tables (``fraction_of_optimal``). matplotlib is imported lazily
with the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path

from trellis_jax.ablate.report import group_rows

_MARKERS = "osD^v<>ph*"


def plot_grid(rows: list[dict], out_dir: str | Path) -> dict[tuple, Path]:
    """Write one PNG per (workload, page size) into ``out_dir``; returns their paths by that key."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    panels: dict[tuple, dict[str, list[dict]]] = {}
    for (workload, page_size, order), group in group_rows(rows).items():
        panels.setdefault((workload, page_size), {})[order] = group
    paths = {}
    for (workload, page_size), by_order in panels.items():
        fig, axes = plt.subplots(1, len(by_order), figsize=(5.2 * len(by_order), 4.6), sharey=True, squeeze=False)
        for ax, (order, group) in zip(axes[0], by_order.items()):
            _panel(ax, group, f"{workload} — {order}, page size {page_size}")
        axes[0][0].set_ylabel("token hit rate")
        handles, labels = axes[0][-1].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.12, 1, 1))  # room for the legend below the panels
        path = out_dir / f"{workload}_p{page_size}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths[(workload, page_size)] = path
    return paths


def _panel(ax, rows: list[dict], title: str) -> None:
    capacities = sorted({r["capacity_pages"] for r in rows})
    for i, policy in enumerate(dict.fromkeys(r["policy"] for r in rows)):
        points = sorted((r["capacity_pages"], r["hit_rate"]) for r in rows if r["policy"] == policy)
        # Distinct markers, shrinking: identical curves (lru and fifo often are) stay visible.
        ax.plot(*zip(*points), marker=_MARKERS[i % len(_MARKERS)], markersize=max(3, 8 - i), linewidth=1.2,
                alpha=0.85, label=policy)
    by_cap = {r["capacity_pages"]: r for r in rows}
    if by_cap[capacities[0]].get("fcfs_optimal_hit_rate") is not None:
        ax.plot(capacities, [by_cap[c]["fcfs_optimal_hit_rate"] for c in capacities], "k--",
                label="optimal bound (arrival order)")
    if by_cap[capacities[0]].get("fcfs_clairvoyant_hit_rate") is not None:
        ax.plot(capacities, [by_cap[c]["fcfs_clairvoyant_hit_rate"] for c in capacities], "-.", color="black",
                linewidth=0.9, label="clairvoyant tree policy (arrival order)")
    ax.plot(capacities, [by_cap[c]["ceiling_hit_rate"] for c in capacities], ":", color="grey", label="ceiling (any order)")
    ax.set_xscale("log")
    # Label exactly the capacities that were run (log-scale minor labels would overlap).
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ax.xaxis.set_major_locator(FixedLocator(capacities))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticklabels([str(c) for c in capacities], fontsize=7)
    ax.set_xlabel("cache capacity (pages)")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
