"""PNG plots of a comparison run (matplotlib, Agg backend): throughput, TTFT distributions, KV memory.

`write_plots(result, out_dir) -> [paths]`:
- throughput.png: output tokens/s per workload, one bar per system (medians over repeats);
- ttft.png: TTFT distribution per workload and system (box plots of every request of every repeat);
- memory.png: peak KV bytes per workload and system (hatched bars: RSS where KV is not separable).
"""

from __future__ import annotations

from pathlib import Path

MIB = 2**20


def write_plots(result: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = {(r["system"], r["workload"]): r for r in result["summary"]}
    workloads = [w for w in result["config"]["workloads"] if any(k[1] == w for k in rows)]
    systems = [s for s in result["config"]["systems"] if any(k[0] == s for k in rows)]
    if not workloads or not systems:
        return []
    return [
        _throughput(rows, workloads, systems, out_dir / "throughput.png"),
        _ttft(rows, workloads, systems, out_dir / "ttft.png"),
        _memory(rows, workloads, systems, out_dir / "memory.png"),
    ]


def _bars(ax, rows, workloads, systems, value, hatch_when=None):
    width = 0.8 / len(systems)
    for i, system in enumerate(systems):
        xs, ys, hatches = [], [], []
        for j, workload in enumerate(workloads):
            row = rows.get((system, workload))
            v = value(row) if row else None
            if v is not None:
                xs.append(j + i * width - 0.4 + width / 2)
                ys.append(v)
                hatches.append("//" if hatch_when and hatch_when(row) else "")
        bars = ax.bar(xs, ys, width, label=system)
        for bar, hatch in zip(bars, hatches):
            bar.set_hatch(hatch)
    ax.set_xticks(range(len(workloads)), workloads)
    ax.legend(fontsize=7, ncol=2)


def _throughput(rows, workloads, systems, path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5))
    _bars(ax, rows, workloads, systems, lambda r: r["output_tokens_per_s"])
    ax.set_ylabel("output tokens/s (median)")
    ax.set_title("End-to-end output throughput per workload")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _ttft(rows, workloads, systems, path):
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, axes = plt.subplots(1, len(workloads), figsize=(3.2 * len(workloads), 4.5), sharey=False)
    axes = axes if len(workloads) > 1 else [axes]
    for ax, workload in zip(axes, workloads):
        present = [s for s in systems if (s, workload) in rows]
        ax.boxplot([rows[(s, workload)]["ttfts_s"] for s in present], showfliers=True)
        ax.set_xticks(range(1, len(present) + 1), present, rotation=70, fontsize=7)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
        ax.tick_params(axis="y", which="both", labelsize=7)
        ax.set_title(workload, fontsize=9)
    axes[0].set_ylabel("TTFT s (log; from wave arrival)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _memory(rows, workloads, systems, path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5))
    _bars(
        ax,
        rows,
        workloads,
        systems,
        lambda r: (r["kv_peak_bytes"] if r["kv_peak_bytes"] is not None else r["rss_peak_bytes"]) / MIB,
        hatch_when=lambda r: r["kv_peak_bytes"] is None,
    )
    ax.set_yscale("log")
    ax.set_ylabel("peak KV MiB (hatched: process RSS)")
    ax.set_title("Peak KV memory per workload")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
