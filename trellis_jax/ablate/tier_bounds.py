"""Offline bounds for the tier hierarchy: per tier, the most hits any policy could serve from that tier and
the ones above it, and the most modelled prefill time any policy could save.

What is computed. For capacities C1 (L1 pages), C2 (L2), C3 (L3) and a serving order, ``cumulative_bounds``
returns B1 = ``belady_hits(C1)``, B2 = ``belady_hits(C1 + C2)``, B3 = ``belady_hits(C1 + C2 + C3)`` (the
relaxed Belady bound of ``optimal.py``, in pages, over the same page references).

Why Bk bounds the hits served from tiers 1..k of every run of ``tiered_replay`` in that order (any L1
policy, any reload rule). Let U be the union of the pages held in tiers 1..k (distinct page identities).
It never holds more than C1 + ... + Ck pages (the L1 tree holds at most C1, each lower tier at most its
capacity). A page enters U only at a reference of that page (inserted into L1 by a request whose KV it
is, fresh or reloaded from a tier below k) or by moving down from a tier already in U (demotion from L1
into L2 keeps it in U). So U, moment by moment, is a feasible schedule of the relaxed cache of capacity
C1 + ... + Ck, and every hit served from tiers 1..k is a counted reference to a page in U: a hit of that
schedule. The relaxed optimum is therefore >= those hits. (k = 1 is ``optimal.py``'s own argument: the
tiers below never put a page into L1 except at a reference.) The gap to what a real policy reaches has the
relaxation's three sources, plus two of the hierarchy: lower tiers only take what L1 evicts (their
contents are not freely chosen), and a hit behind a recomputed page is lost.

Time. A page served from tier k saves s_k seconds (``TierConfig.saving_seconds``: the full recompute for
L1; recompute minus reload for a tier the rule reloads from; 0 otherwise). With h_k hits from tier k and
H_k = h_1 + ... + h_k <= B_k, take s'_k = max(s_k, ..., s_3) (non-increasing, >= s_k); then
sum h_k s_k <= sum h_k s'_k = sum_k H_k (s'_k - s'_{k+1}) <= sum_k B_k (s'_k - s'_{k+1}) (s'_4 = 0, every
difference >= 0). ``time_saved_bound`` returns that last sum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trellis_jax.ablate import optimal


def cumulative_bounds(
    refs: optimal.PageReferences, capacities: Sequence[int], next_use: np.ndarray | None = None
) -> tuple[int, ...]:
    """Hit pages bound for tiers 1..k, for each k: ``belady_hits`` at the running sum of ``capacities``."""
    if any(c < 0 for c in capacities):
        raise ValueError(f"capacities must be >= 0, got {tuple(capacities)}")
    next_use = optimal.next_gainful_reference(refs) if next_use is None else next_use
    totals = np.cumsum(capacities).tolist()
    bounds: dict[int, int] = {}
    for total in totals:
        if total not in bounds:  # an absent tier (0 pages) repeats the bound above it
            bounds[total] = optimal.belady_hits(refs, total, next_use)
    return tuple(bounds[t] for t in totals)


def time_saved_bound(cumulative: Sequence[int], savings: Sequence[float]) -> float:
    """Most seconds saved, given cumulative hit-page bounds B_k and per-page savings s_k per tier."""
    if len(cumulative) != len(savings):
        raise ValueError(f"one saving per tier: {len(cumulative)} bounds, {len(savings)} savings")
    envelope = np.maximum.accumulate(np.asarray(savings, float)[::-1])[::-1]  # s'_k = max(s_k, ..., s_n)
    steps = envelope - np.append(envelope[1:], 0.0)
    return float(np.dot(np.asarray(cumulative, float), steps))
