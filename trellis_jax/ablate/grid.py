"""The ablation grid: one replay per policy x capacity x page size x scheduling order, plus the bounds.

``run_grid(trace, GridSpec) -> list[dict]``: one row (plain JSON-able dict) per cell with
- ``hit_rate`` = cached prompt tokens / prompt tokens; ``prefill_tokens_saved`` (= cached tokens) and
  ``prefill_tokens_computed``; ``prefill_flops_saved`` (model cost formula, ``costs.py``) and its
  fraction of all prefill FLOPs; ``pages_evicted``, ``pages_inserted``, ``peak_pages``, ``rejected``;
  ``wall_s`` (the replay alone);
- ``optimal_hit_rate``: the offline bound (``optimal.py``) for the order this cell actually served the
  requests in (the dashed lines of the plots), and ``fraction_of_optimal`` = hit_rate / optimal_hit_rate;
- ``fcfs_optimal_hit_rate``: the bound for arrival order, every request (what reordering gains over), and
  ``fcfs_clairvoyant_hit_rate``: what the clairvoyant tree policy (``clairvoyant.py``) achieves in
  arrival order, a feasible lower end for the true optimum (None with shared namespaces);
- ``ceiling_hit_rate``: the bound for any order and any capacity, and ``fraction_of_ceiling``.
Fractions are None where the bound is 0 (nothing could hit).
Capacities are in pages (usable pages; the cache adds the padding sink). ``capacities=None`` picks
``auto_capacities``: a geometric ladder up to the trace's working set at that page size.
With ``tiers`` (a ``TierConfig``) each cell is a ``tiered_replay``: the capacity is L1's, ``hit_rate``
counts reloads from L2/L3 too, the bounds above are taken at the combined capacity L1 + L2 + L3 (what
bounds every hit, ``tier_bounds``), and the row gains the tier columns of ``tier_rows``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from trellis_jax.ablate import costs, optimal
from trellis_jax.ablate.clairvoyant import clairvoyant_replay
from trellis_jax.ablate.queueing import ORDERS, ServerModel
from trellis_jax.ablate.replay import ReplayConfig, ReplayResult, kv_len, replay
from trellis_jax.ablate.tier_rows import tier_columns
from trellis_jax.ablate.tiered_replay import tiered_replay
from trellis_jax.ablate.tiers import TierConfig
from trellis_jax.ablate.trace import Trace
from trellis_jax.cache import get_policy


@dataclass(frozen=True)
class GridSpec:
    policies: tuple[str, ...] = ("lru", "lfu", "fifo", "slru", "cost_aware")
    capacities: tuple[int, ...] | None = None  # pages; None = auto_capacities per page size
    page_sizes: tuple[int, ...] = (16,)
    orders: tuple[str, ...] = ("fcfs", "lpm")
    window: int = 16
    max_batch: int = 1
    with_optimal: bool = True
    tiers: TierConfig | None = None  # simulate L2/L3 below each cell's pool

    def __post_init__(self):
        for name in self.policies:
            get_policy(name)  # unknown names fail here, before any replay
        unknown = set(self.orders) - set(ORDERS)
        if unknown or not self.orders:
            raise ValueError(f"unknown scheduling orders {sorted(unknown)}; known: {ORDERS}")
        if not self.policies or not self.page_sizes or any(p < 1 for p in self.page_sizes):
            raise ValueError(f"need at least one policy and page sizes >= 1: {self}")
        if self.capacities is not None and (not self.capacities or min(self.capacities) < 1):
            raise ValueError(f"capacities must be >= 1 pages, got {self.capacities}")
        if self.tiers is not None and not isinstance(self.tiers, TierConfig):
            raise ValueError(f"tiers must be a TierConfig or None, got {self.tiers!r}")


def auto_capacities(trace: Trace, refs: optimal.PageReferences, steps: int = 6) -> tuple[int, ...]:
    """``steps`` capacities, geometric, from 1/32 of the distinct pages referenced up to all of them;
    never below what the largest request needs on its own (smaller pools only reject requests)."""
    largest = max(-(-kv_len(r) // refs.page_size) for r in trace.requests)
    working_set = max(8, largest, len(np.unique(refs.nodes)))
    ladder = np.geomspace(max(8, largest, working_set / 32), working_set, steps)
    return tuple(sorted({int(round(c)) for c in ladder}))


class _Bounds:
    """Page references per (page size, served order), memoised: many cells share an order."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self._refs: dict[tuple, tuple[optimal.PageReferences, np.ndarray]] = {}

    def refs(self, page_size: int, order: Sequence[int]) -> tuple[optimal.PageReferences, np.ndarray]:
        key = (page_size, tuple(order))
        if key not in self._refs:
            refs = optimal.page_references(self.trace, order, page_size)
            self._refs[key] = (refs, optimal.next_gainful_reference(refs))
        return self._refs[key]

    def optimal_hit_tokens(self, page_size: int, order: Sequence[int], capacity: int) -> int:
        refs, next_use = self.refs(page_size, order)
        return optimal.belady_hits(refs, capacity, next_use) * page_size


def run_grid(
    trace: Trace,
    spec: GridSpec,
    server: ServerModel = ServerModel(),
    model_config=None,
    progress: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Every cell of ``spec`` on ``trace``; ``progress`` is called with each row as it completes."""
    bounds = _Bounds(trace)
    arrival = list(range(len(trace)))
    prompt_tokens = trace.num_prompt_tokens
    total_flops = costs.total_prefill_flops((r.prompt_len for r in trace.requests), model_config)
    rows = []
    for page_size in spec.page_sizes:
        refs, _ = bounds.refs(page_size, arrival)
        capacities = spec.capacities or auto_capacities(trace, refs)
        ceiling = optimal.ceiling_hits(refs) * page_size / prompt_tokens
        below = sum(spec.tiers.tier_pages(page_size)) if spec.tiers else 0  # bounds count every tier
        for capacity in capacities:
            fcfs_optimal = (
                bounds.optimal_hit_tokens(page_size, arrival, capacity + below) / prompt_tokens
                if spec.with_optimal
                else None
            )
            clairvoyant = (
                clairvoyant_replay(trace, capacity, page_size).hit_rate
                if spec.with_optimal and not trace.shared_namespaces
                else None
            )
            for order, policy in itertools.product(spec.orders, spec.policies):
                config = ReplayConfig(capacity, page_size, policy, order, spec.window, spec.max_batch)
                tiered = tiered_replay(trace, config, spec.tiers, server) if spec.tiers else None
                result = tiered.replay if tiered else replay(trace, config, server)
                row = _row(trace, result, total_flops, model_config)
                row.update(
                    fcfs_optimal_hit_rate=fcfs_optimal,
                    fcfs_clairvoyant_hit_rate=clairvoyant,
                    ceiling_hit_rate=ceiling,
                    fraction_of_ceiling=row["hit_rate"] / ceiling if ceiling else None,
                )
                if spec.with_optimal:
                    _add_optimal(row, bounds, result, below)
                if tiered:
                    row.update(tier_columns(tiered, *bounds.refs(page_size, result.served_order)))
                rows.append(row)
                if progress:
                    progress(row)
    return rows


def _row(trace: Trace, result: ReplayResult, total_flops: float, model_config) -> dict:
    c = result.config
    saved_flops = costs.total_flops_saved(result.prompt_tokens, result.cached_tokens, model_config)
    prompt_tokens = int(result.prompt_tokens.sum())
    return dict(
        workload=trace.name,
        num_requests=len(trace),
        prompt_tokens=prompt_tokens,
        policy=c.policy,
        order=c.order,
        page_size=c.page_size,
        capacity_pages=c.num_pages,
        capacity_tokens=c.num_pages * c.page_size,
        window=c.window,
        max_batch=c.max_batch,
        hit_tokens=result.hit_tokens,
        hit_rate=result.hit_rate,
        prefill_tokens_saved=result.hit_tokens,
        prefill_tokens_computed=prompt_tokens - result.hit_tokens,
        prefill_flops_saved=saved_flops,
        prefill_flops_saved_frac=saved_flops / total_flops,
        pages_evicted=result.evicted_pages,
        pages_inserted=result.inserted_pages,
        peak_pages=result.peak_pages,
        rejected=len(result.rejected),
        wall_s=result.wall_s,
    )


def _add_optimal(row: dict, bounds: _Bounds, result: ReplayResult, below: int = 0) -> None:
    start = time.perf_counter()
    c = result.config
    hit_tokens = bounds.optimal_hit_tokens(c.page_size, result.served_order, c.num_pages + below)
    row["optimal_hit_tokens"] = hit_tokens
    row["optimal_hit_rate"] = hit_tokens / row["prompt_tokens"]
    row["fraction_of_optimal"] = result.hit_tokens / hit_tokens if hit_tokens else None  # 0/0: nothing to get
    row["optimal_wall_s"] = time.perf_counter() - start
