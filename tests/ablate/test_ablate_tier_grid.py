"""Tiers in the grid, the summary and the command line (flags validated)."""

import json

import pytest

from trellis_jax.ablate.cli import main
from trellis_jax.ablate.grid import GridSpec, run_grid
from trellis_jax.ablate.tiers import Capacity, TierConfig
from trellis_jax.ablate.workloads import workload

SPEC = dict(policies=("lru", "lfu"), capacities=(48, 160), page_sizes=(8,), orders=("fcfs", "lpm"))
TIERS = TierConfig(Capacity(64), Capacity(256))


@pytest.fixture(scope="module")
def trace():
    return workload("multi_turn", scale=0.1)


@pytest.fixture(scope="module")
def rows(trace):
    return run_grid(trace, GridSpec(**SPEC, tiers=TIERS))


def test_tier_hit_rates_add_up_to_the_hit_rate(rows):
    for r in rows:
        assert r["l1_hit_rate"] + r["l2_hit_rate"] + r["l3_hit_rate"] == pytest.approx(r["hit_rate"])


def test_every_tiered_cell_is_within_its_bounds(rows):
    for r in rows:
        assert r["l1_hit_rate"] <= r["bound_l1_hit_rate"] + 1e-12
        assert r["l1_hit_rate"] + r["l2_hit_rate"] <= r["bound_l12_hit_rate"] + 1e-12
        assert r["hit_rate"] <= r["bound_l123_hit_rate"] == pytest.approx(r["optimal_hit_rate"])
        assert r["time_saved_s"] <= r["time_saved_bound_s"] + 1e-9 <= r["prefill_s"] + 1e-9


def test_the_l1_of_a_tiered_cell_is_the_untiered_cell(trace, rows):
    # a reloaded page takes the same L1 page and insert as a recomputed one: L1 evolves identically
    plain = {(r["policy"], r["capacity_pages"], r["order"]): r["hit_rate"] for r in run_grid(trace, GridSpec(**SPEC))}
    for r in rows:
        assert r["l1_hit_rate"] == plain[(r["policy"], r["capacity_pages"], r["order"])]


def test_lower_tiers_add_hits_under_pressure(rows):
    assert any(r["l2_hit_rate"] > 0 for r in rows) and any(r["l3_hit_rate"] > 0 for r in rows)


def _cli(tmp_path, *extra):
    out = tmp_path / "out"
    argv = ["--workload", "multi_turn", "--scale", "0.05", "--policies", "lru", "--capacities", "48"]
    argv += ["--page-sizes", "8", "--orders", "fcfs", "--no-plots", "--out", str(out), *extra]
    return main(argv), out


def test_cli_tier_flags_reach_the_rows_and_the_summary(tmp_path):
    page_bytes = 8 * TierConfig().kv_bytes_per_token
    code, out = _cli(tmp_path, "--l2-pages", str(64 * page_bytes) + "B", "--l3-pages", "256", "--disk-read-bw", "1GB")
    assert code == 0
    row = json.loads((out / "rows.json").read_text())["rows"][0]
    assert (row["l2_pages"], row["l3_pages"]) == (64, 256)
    assert "| lru | 48 | 64 / 256 |" in (out / "summary.md").read_text()


def test_cli_slow_disk_declines_every_l3_reload(tmp_path):
    code, out = _cli(tmp_path, "--l3-pages", "256", "--disk-read-bw", "1000")
    row = json.loads((out / "rows.json").read_text())["rows"][0]
    assert code == 0 and row["l3_hit_rate"] == 0 and row["l3_declined_pages"] > 0


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--l2-pages", "-3"], "tier capacity"),
        (["--l2-pages", "lots"], "tier capacity"),
        (["--host-bw", "25e9"], "need a tier"),
        (["--l2-pages", "64", "--host-bw", "0"], "host_bytes_per_s must be a finite number > 0"),
        (["--l2-pages", "64", "--disk-read-bw", "fast"], "a rate is a number per second"),
        (["--l2-pages", "64", "--kv-bytes-per-token", "0"], "kv_bytes_per_token must be an int >= 1"),
        (["--l2-pages", "64", "--from-rows", "rows.json"], "tier flags would not be applied"),
    ],
)
def test_cli_refuses_bad_tier_flags(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        _cli(tmp_path, *flags)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_cli_refuses_tiers_with_shared_namespaces(tmp_path, capsys):
    trace_path = tmp_path / "t.jsonl"
    trace_path.write_text(json.dumps({"prompt_tokens": [1, 2, 3], "namespace": "pub"}) + "\n")
    argv = ["--trace", str(trace_path), "--shared-namespace", "pub", "--l2-pages", "64", "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and "shared namespaces" in capsys.readouterr().err


def test_cli_draws_and_links_the_tier_plot(tmp_path):
    out = tmp_path / "out"
    argv = ["--workload", "multi_turn", "--scale", "0.05", "--policies", "lru,lfu", "--capacities", "48,96"]
    assert main([*argv, "--page-sizes", "8", "--orders", "fcfs", "--l2-pages", "64", "--out", str(out)]) == 0
    assert (out / "plots" / "tiers_multi_turn_p8.png").stat().st_size > 1000
    assert "(plots/tiers_multi_turn_p8.png)" in (out / "summary.md").read_text()


def test_tier_plot_draws_each_policy_twice_and_the_three_bounds(rows, tmp_path):
    import matplotlib.pyplot as plt

    from trellis_jax.ablate.tier_plots import _draw

    fig, ax = plt.subplots()
    _draw(ax, [r for r in rows if r["order"] == "fcfs"], "t")
    gids = {line.get_gid(): line.get_ydata().tolist() for line in ax.get_lines()}
    plt.close(fig)
    assert set(gids) == {"l1:lru", "total:lru", "l1:lfu", "total:lfu", "bound_l1", "bound_l12", "bound_l123"}
    assert all(t >= b for t, b in zip(gids["total:lru"], gids["l1:lru"]))
