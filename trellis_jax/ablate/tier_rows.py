"""The grid's tier columns (one row per cell, when ``GridSpec.tiers`` is set) and their markdown table.

Columns (rates are fractions of the trace's prompt tokens; L1's tree evolves exactly as without tiers, since a
reloaded page takes the same L1 page and insert a recomputed one would, so ``l1_hit_rate`` is the L1-only
hit rate of that cell, arrival times aside):
- ``l2_pages``, ``l3_pages``: tier capacities at this page size; ``l1_hit_rate``, ``l2_hit_rate``,
  ``l3_hit_rate``: hits served from each tier (``hit_rate`` is their sum);
- ``l2_reloaded_bytes``, ``l3_reloaded_bytes``, ``l2_written_bytes``, ``l3_written_bytes`` (write-back),
  ``l2_declined_pages``, ``l3_declined_pages`` (found, recomputed by the cost rule; the walk below stops
  at such a page, so at most one per request), ``reload_s``;
- ``prefill_s``: modelled seconds to prefill every prompt with no cache; ``time_saved_s``: saved by every
  hit net of reloads; ``time_saved_bound_s``: the most any policy could save (``tier_bounds``);
- ``bound_l1_hit_rate``, ``bound_l12_hit_rate``, ``bound_l123_hit_rate``: ``tier_bounds.cumulative_bounds``
  for the order the cell served (tiers 1, 1..2, 1..3).
"""

from __future__ import annotations

import numpy as np

from trellis_jax.ablate import optimal
from trellis_jax.ablate.tier_bounds import cumulative_bounds, time_saved_bound
from trellis_jax.ablate.tiered_replay import TieredResult


def tier_columns(result: TieredResult, refs: optimal.PageReferences, next_use: np.ndarray) -> dict:
    """The tier columns of one cell; ``refs`` / ``next_use`` for the order ``result`` served."""
    tier, ps = result.tier, result.replay.config.page_size
    prompt_tokens = int(result.replay.prompt_tokens.sum())
    l2, l3 = tier.tier_pages(ps)
    bounds = cumulative_bounds(refs, (result.replay.config.num_pages, l2, l3), next_use)
    savings = [tier.saving_seconds(t, ps) for t in (1, 2, 3)]
    row = dict(l2_pages=l2, l3_pages=l3)
    for t in (1, 2, 3):
        row[f"l{t}_hit_rate"] = result.tier_hit_rate(t)
    for t in (2, 3):
        row[f"l{t}_reloaded_bytes"] = result.reloaded_bytes(t)
        row[f"l{t}_written_bytes"] = result.written_bytes(t)
        counters = result.counters.get(t)
        row[f"l{t}_declined_pages"] = counters.declined_pages if counters else 0
    row.update(
        reload_s=result.reload_seconds(),
        prefill_s=prompt_tokens / tier.prefill_tokens_per_s,
        time_saved_s=result.time_saved_s(),
        time_saved_bound_s=time_saved_bound(bounds, savings),
    )
    for name, hits in zip(("bound_l1", "bound_l12", "bound_l123"), bounds):
        row[f"{name}_hit_rate"] = hits * ps / prompt_tokens
    return row


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def tier_table(rows: list[dict]) -> str:
    """One table for rows of one workload x page size x order that carry tier columns."""
    lines = [
        "| policy | L1 pages | L2 / L3 pages | L1 | L2 | L3 | total | bound L1 / L1+L2 / all "
        "| reloaded MB L2 / L3 | declined | time saved s (bound) |",
        "|---" * 11 + "|",
    ]
    for r in sorted(rows, key=lambda r: (r["capacity_pages"], r["policy"])):
        lines.append(
            f"| {r['policy']} | {r['capacity_pages']} | {r['l2_pages']} / {r['l3_pages']} "
            f"| {_pct(r['l1_hit_rate'])} | {_pct(r['l2_hit_rate'])} | {_pct(r['l3_hit_rate'])} "
            f"| {_pct(r['hit_rate'])} | {_pct(r['bound_l1_hit_rate'])} / {_pct(r['bound_l12_hit_rate'])} / "
            f"{_pct(r['bound_l123_hit_rate'])} | {_mb(r['l2_reloaded_bytes'])} / {_mb(r['l3_reloaded_bytes'])} "
            f"| {r['l2_declined_pages'] + r['l3_declined_pages']} "
            f"| {r['time_saved_s']:.3g} ({r['time_saved_bound_s']:.3g}) of {r['prefill_s']:.3g} |"
        )
    return "\n".join(lines)
