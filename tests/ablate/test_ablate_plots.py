"""Each panel of the plots draws the bound its own cells were measured against, as the summary reports it.

The trace: multi-turn chats, where longest-prefix-first (lpm) serves requests in a cache-dependent order
that beats every policy's optimum in arrival order (lru at 128 pages: 55 % vs 45 %), and gives lru and
lfu different orders, so different bounds.
"""

import pytest
from matplotlib.figure import Figure

from trellis_jax.ablate.grid import GridSpec, run_grid
from trellis_jax.ablate.plots import draw_panel
from trellis_jax.ablate.report import markdown_table
from trellis_jax.ablate.workloads import workload

POLICIES = ("lru", "lfu")


@pytest.fixture(scope="module")
def rows():
    spec = GridSpec(policies=POLICIES, capacities=(32, 128), page_sizes=(16,), orders=("fcfs", "lpm"))
    return run_grid(workload("multi_turn", scale=0.1), spec)


def _of(rows, order):
    return [r for r in rows if r["order"] == order]


def _lines(rows, order) -> dict[str, dict[int, float]]:
    """gid -> {capacity: y} of every line the panel of ``order`` draws."""
    ax = Figure().subplots()
    draw_panel(ax, _of(rows, order), "panel")
    return {line.get_gid(): dict(zip(line.get_xdata(), line.get_ydata())) for line in ax.lines}


def _bound_for(lines, policy) -> dict[int, float]:
    return lines.get(f"optimal:{policy}") or lines["optimal:*"]


def test_the_trace_makes_lpm_beat_the_arrival_order_optimum(rows):
    lru = next(r for r in _of(rows, "lpm") if r["policy"] == "lru" and r["capacity_pages"] == 128)
    assert lru["hit_rate"] > lru["fcfs_optimal_hit_rate"]


@pytest.mark.parametrize("order", ["fcfs", "lpm"])
def test_no_policy_curve_rises_above_the_bound_its_panel_draws_for_it(rows, order):
    lines = _lines(rows, order)
    for policy in POLICIES:
        bound = _bound_for(lines, policy)
        assert all(hit <= bound[capacity] for capacity, hit in lines[f"policy:{policy}"].items())


@pytest.mark.parametrize("order", ["fcfs", "lpm"])
def test_the_plotted_bound_is_the_one_the_summarys_of_opt_divides_by(rows, order):
    lines = _lines(rows, order)
    for r in _of(rows, order):
        plotted = _bound_for(lines, r["policy"])[r["capacity_pages"]]
        assert r["fraction_of_optimal"] == pytest.approx(r["hit_rate"] / plotted)


def test_a_cache_dependent_order_gets_a_bound_per_policy(rows):
    lines = _lines(rows, "lpm")
    assert "optimal:*" not in lines and lines["optimal:lru"] != lines["optimal:lfu"]


def test_arrival_order_gets_one_shared_bound_and_the_clairvoyant_line(rows):
    bounds = {gid for gid in _lines(rows, "fcfs") if gid.startswith(("optimal:", "clairvoyant"))}
    assert bounds == {"optimal:*", "clairvoyant"}


def test_the_clairvoyant_arrival_order_line_stays_out_of_a_reordered_panel(rows):
    assert "clairvoyant" not in _lines(rows, "lpm")


def test_the_summary_table_lists_each_policys_own_bound(rows):
    table = markdown_table(_of(rows, "lpm"))
    for policy in POLICIES:
        bounds = [f"{100 * r['optimal_hit_rate']:.1f}%" for r in _of(rows, "lpm") if r["policy"] == policy]
        assert f"| *optimal bound, {policy}'s lpm order* | " + " | ".join(bounds) + " |" in table
    assert "arrival order" not in table
