"""PNG plots of a grid: hit rate vs capacity, one curve per policy, each beneath its own optimal bound.

One figure per workload x page size, one panel per scheduling order. A panel's dashed lines are the
offline optimal bound for the order its cells actually served requests in (``report.own_order_bounds``,
the very numbers each cell's "of opt" divides by): one black line where every policy served the same
order (fcfs, dfs), else one per policy in its colour (lpm: the order follows the cache, so each policy
has its own). No curve can rise above its bound. The fcfs panel also draws, dash-dotted, what a
clairvoyant policy achieves through the real tree in arrival order (the true optimum lies between the
two); the dotted grey line is the ceiling for any order and capacity. Every line's gid says what it
shows (``policy:<name>``, ``optimal:<policy>`` or ``optimal:*`` for a shared bound, ``clairvoyant``,
``ceiling``), so a figure can be read back. matplotlib is imported lazily with the Agg backend (no
display needed).
"""

from __future__ import annotations

from pathlib import Path

from trellis_jax.ablate.report import group_rows, order_name, own_order_bounds

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
            draw_panel(ax, group, f"{workload} — {order}, page size {page_size}")
        axes[0][0].set_ylabel("token hit rate")
        legend = _legend_entries(axes[0])
        ncol = max(4, len(by_order) * 2)
        fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=ncol, fontsize=8, frameon=False)
        legend_rows = -(-len(legend) // ncol)
        fig.tight_layout(rect=(0, 0.04 + 0.045 * legend_rows, 1, 1))  # room for the legend below the panels
        path = out_dir / f"{workload}_p{page_size}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths[(workload, page_size)] = path
    return paths


def _legend_entries(axes) -> dict:
    """label -> handle over every panel (panels differ: per-policy bounds, the clairvoyant line), first seen."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    return entries


def draw_panel(ax, rows: list[dict], title: str) -> None:
    """One panel: the rows of one workload x page size x order."""
    capacities = sorted({r["capacity_pages"] for r in rows})
    order = rows[0]["order"]
    colours = {}
    for i, policy in enumerate(dict.fromkeys(r["policy"] for r in rows)):
        points = sorted((r["capacity_pages"], r["hit_rate"]) for r in rows if r["policy"] == policy)
        # Distinct markers, shrinking: identical curves (lru and fifo often are) stay visible.
        (line,) = ax.plot(
            *zip(*points),
            marker=_MARKERS[i % len(_MARKERS)],
            markersize=max(3, 8 - i),
            linewidth=1.2,
            alpha=0.85,
            label=policy,
            gid=f"policy:{policy}",
        )
        colours[policy] = line.get_color()
    for policy, bound in own_order_bounds(rows).items():
        xs = sorted(bound)
        if policy is None:
            ax.plot(xs, [bound[c] for c in xs], "k--", label=f"optimal bound ({order_name(order)})", gid="optimal:*")
        else:
            # One legend entry for them all (the legend keeps the first line of a label).
            ax.plot(
                xs,
                [bound[c] for c in xs],
                "--",
                color=colours[policy],
                linewidth=1.0,
                label=f"optimal bound, each policy's own {order_name(order)} (its colour)",
                gid=f"optimal:{policy}",
            )
    by_cap = {r["capacity_pages"]: r for r in rows}
    if order == "fcfs" and by_cap[capacities[0]].get("fcfs_clairvoyant_hit_rate") is not None:
        ax.plot(
            capacities,
            [by_cap[c]["fcfs_clairvoyant_hit_rate"] for c in capacities],
            "-.",
            color="black",
            linewidth=0.9,
            label="clairvoyant tree policy (arrival order)",
            gid="clairvoyant",
        )
    ax.plot(
        capacities,
        [by_cap[c]["ceiling_hit_rate"] for c in capacities],
        ":",
        color="grey",
        label="ceiling (any order)",
        gid="ceiling",
    )
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
