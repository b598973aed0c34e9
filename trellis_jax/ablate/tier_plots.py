"""PNG plots of a tiered grid: per policy, the hit rate from L1 alone and with L2 + L3, under the tier bounds.

One figure per workload x page size (``tiers_<workload>_p<page size>.png``), one panel per order; x is the L1
capacity. Each policy has one colour: solid = hits served from L1 (``l1_hit_rate``, the same as without
tiers), dashed = every hit (``hit_rate``: L1 + reloads). Black lines are the bounds of ``tier_bounds`` for the
order that cell served (from the first policy's rows where the order depends on the policy: lpm): dotted = L1
alone, dash-dotted = L1 + L2, dashed = all tiers. Line gids: ``l1:<policy>``, ``total:<policy>``,
``bound_l1``, ``bound_l12``, ``bound_l123``. matplotlib is imported lazily (Agg backend).
"""

from __future__ import annotations

from pathlib import Path

from trellis_jax.ablate.report import group_rows

_BOUNDS = (
    ("bound_l1", ":", "bound, L1 alone"),
    ("bound_l12", "-.", "bound, L1 + L2"),
    ("bound_l123", "--", "bound, all"),
)


def plot_tier_grid(rows: list[dict], out_dir: str | Path) -> dict[tuple, Path]:
    """One PNG per (workload, page size) of rows with tier columns; keyed ``(workload, page_size, "tiers")``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[tuple, dict[str, list[dict]]] = {}
    for (workload, page_size, order), group in group_rows([r for r in rows if "l1_hit_rate" in r]).items():
        panels.setdefault((workload, page_size), {})[order] = group
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for (workload, page_size), by_order in panels.items():
        fig, axes = plt.subplots(1, len(by_order), figsize=(5.2 * len(by_order), 4.6), sharey=True, squeeze=False)
        for ax, (order, group) in zip(axes[0], by_order.items()):
            _draw(ax, group, f"{workload} — {order}, page size {page_size}, tiers")
        axes[0][0].set_ylabel("token hit rate")
        axes[0][-1].legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = out_dir / f"tiers_{workload}_p{page_size}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths[(workload, page_size, "tiers")] = path
    return paths


def _draw(ax, rows: list[dict], title: str) -> None:
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    for policy in policies:
        cells = sorted((r for r in rows if r["policy"] == policy), key=lambda r: r["capacity_pages"])
        xs = [r["capacity_pages"] for r in cells]
        (line,) = ax.plot(xs, [r["l1_hit_rate"] for r in cells], marker="o", label=f"{policy}, L1", gid=f"l1:{policy}")
        ax.plot(
            xs,
            [r["hit_rate"] for r in cells],
            "--",
            marker="s",
            color=line.get_color(),
            label=f"{policy}, with tiers",
            gid=f"total:{policy}",
        )
    first = sorted((r for r in rows if r["policy"] == policies[0]), key=lambda r: r["capacity_pages"])
    for key, style, label in _BOUNDS:
        xs = [r["capacity_pages"] for r in first]
        ax.plot(xs, [r[f"{key}_hit_rate"] for r in first], style, color="black", linewidth=0.9, label=label, gid=key)
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    capacities = sorted({r["capacity_pages"] for r in rows})  # label exactly these (as plots.py)
    ax.xaxis.set_major_locator(FixedLocator(capacities))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticklabels([str(c) for c in capacities], fontsize=7)
    ax.set_xlabel("L1 capacity (pages)")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
