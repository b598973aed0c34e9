"""The grid, its outputs and the command line, on a small workload."""

import csv
import json

import pytest
from ablate_traces import trace_of

from trellis_jax.ablate.cli import main
from trellis_jax.ablate.grid import GridSpec, run_grid
from trellis_jax.ablate.workloads import workload


@pytest.fixture(scope="module")
def rows():
    spec = GridSpec(policies=("lru", "lfu"), capacities=(160, 480), page_sizes=(8,), orders=("fcfs", "lpm"))
    return run_grid(workload("few_shot", scale=0.1), spec)


def test_one_row_per_cell(rows):
    cells = {(r["policy"], r["capacity_pages"], r["order"], r["page_size"]) for r in rows}
    assert len(rows) == len(cells) == 2 * 2 * 2


def test_every_cell_is_within_its_bounds(rows):
    for r in rows:
        assert r["hit_rate"] <= r["optimal_hit_rate"] <= r["ceiling_hit_rate"]
        assert 0 < r["fraction_of_optimal"] <= 1 and 0 < r["fraction_of_ceiling"] <= 1


def test_auto_capacities_start_where_the_largest_request_fits():
    trace = trace_of(list(range(40)), list(range(200)))
    rows = run_grid(trace, GridSpec(policies=("lru",), orders=("fcfs",), page_sizes=(4,), with_optimal=False))
    assert min(r["capacity_pages"] for r in rows) == 50 and all(r["rejected"] == 0 for r in rows)


def test_nothing_to_hit_gives_no_fraction():
    trace = trace_of([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    row = run_grid(trace, GridSpec(policies=("lru",), orders=("fcfs",), page_sizes=(2,), capacities=(8,)))[0]
    assert row["optimal_hit_rate"] == 0 and row["fraction_of_optimal"] is None and row["fraction_of_ceiling"] is None


def test_saved_tokens_and_flops_agree(rows):
    for r in rows:
        assert r["prefill_tokens_saved"] + r["prefill_tokens_computed"] == r["prompt_tokens"]
        assert (r["prefill_flops_saved"] > 0) == (r["prefill_tokens_saved"] > 0)
        assert 0 <= r["prefill_flops_saved_frac"] <= 1


def test_more_capacity_never_hurts_lru_here(rows):
    lru = {r["capacity_pages"]: r["hit_rate"] for r in rows if r["policy"] == "lru" and r["order"] == "fcfs"}
    assert lru[480] >= lru[160]


def test_unknown_policy_fails_before_any_replay():
    with pytest.raises(ValueError, match="unknown eviction policy"):
        GridSpec(policies=("nope",))


def test_auto_capacities_reach_the_working_set():
    trace = trace_of(list(range(100)), list(range(100)))
    rows = run_grid(trace, GridSpec(policies=("lru",), orders=("fcfs",), page_sizes=(4,), with_optimal=False))
    assert max(r["capacity_pages"] for r in rows) == 25  # 100 tokens of KV in pages of 4
    assert all("optimal_hit_rate" not in r for r in rows)


def test_cli_writes_csv_json_summary_and_plots(tmp_path):
    out = tmp_path / "out"
    assert (
        main(
            [
                "--workload",
                "shared_system",
                "--scale",
                "0.05",
                "--policies",
                "lru,arc",
                "--capacities",
                "16,64",
                "--page-sizes",
                "16",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with (out / "rows.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 2 * 2 * 2
    assert len(json.loads((out / "rows.json").read_text())["rows"]) == 8
    summary = (out / "summary.md").read_text()
    assert (
        "## shared_system — page size 16, order lpm" in summary
        and "| lpm | arc |" in summary
        and "plots/shared_system_p16.png" in summary
    )
    assert (out / "plots" / "shared_system_p16.png").stat().st_size > 1000


def test_cli_rerenders_from_rows_without_replaying(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    main(
        [
            "--workload",
            "no_share",
            "--scale",
            "0.02",
            "--policies",
            "lru",
            "--capacities",
            "64",
            "--orders",
            "fcfs",
            "--no-plots",
            "--out",
            str(first),
        ]
    )
    assert main(["--from-rows", str(first / "rows.json"), "--no-plots", "--out", str(second)]) == 0
    assert (second / "summary.md").read_text() == (first / "summary.md").read_text()


def test_cli_reads_a_trace_file(tmp_path):
    trace_path = tmp_path / "t.jsonl"
    trace_path.write_text(
        "".join(json.dumps({"prompt_tokens": list(range(40)) + [i], "output_len": 2}) + "\n" for i in range(100, 106))
    )
    out = tmp_path / "out"
    assert (
        main(
            [
                "--trace",
                str(trace_path),
                "--policies",
                "lru",
                "--capacities",
                "32",
                "--page-sizes",
                "4",
                "--orders",
                "fcfs",
                "--no-plots",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    row = json.loads((out / "rows.json").read_text())["rows"][0]
    assert row["workload"] == "t" and row["hit_tokens"] == 5 * 40  # 10 shared pages of 4, hit by requests 2..6


def test_speed_check_reports_its_numbers(capsys):
    from trellis_jax.ablate.speed import main as speed_main

    assert speed_main(["--requests", "300", "--capacity", "2048"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["requests"] == 300 and 0 < report["hit_rate"] < 1 and report["replay_s"] >= 0
