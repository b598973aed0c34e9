"""Report: verdicts against the issue's targets, and BENCHMARKS.md section replacement."""

from tools.bench.report import SECTION_TITLE, markdown, update_section, verdicts


def _row(system, workload, tps, ttft):
    return {
        "system": system,
        "workload": workload,
        "output_tokens_per_s": tps,
        "ttft_p50_s": ttft,
        "ttft_p99_s": ttft,
        "requests_per_s": 1.0,
        "prefill_computed": None,
        "prefill_skipped": None,
        "reusable_tokens": 0,
        "kv_peak_bytes": None,
        "rss_peak_bytes": 2**20,
        "cache_hit_rate": None,
        "repeats": 1,
        "ttfts_s": [ttft],
    }


def _result(rows, workloads=("shared_system", "no_share")):
    return {
        "summary": rows,
        "config": {
            "workloads": list(workloads),
            "systems": ["trellis", "llama.cpp-F32", "llama.cpp-Q4_1"],
            "threads": 2,
            "preset": "tiny",
            "repeats": 1,
        },
        "machine": {
            "started_utc": "now",
            "cpu_count": 2,
            "processor": "x",
            "platform": "p",
            "versions": {"jax": "0.10"},
            "tokenizer": "words",
        },
        "runs": [{"loadavg_1m": 3.0}],
        "skipped": {"hf": "no torch"},
        "misses": [],
    }


def test_shared_workload_needs_twice_the_best_llama_cpp():
    rows = [
        _row("trellis", "shared_system", 30.0, 1.0),
        _row("llama.cpp-F32", "shared_system", 10.0, 2.0),
        _row("llama.cpp-Q4_1", "shared_system", 20.0, 3.0),
    ]
    (v,) = [v for v in verdicts(_result(rows)) if v["workload"] == "shared_system"]
    assert v["status"] == "MISSED" and v["best_peer"] == "llama.cpp-Q4_1" and v["ratio"] == 1.5


def test_shared_workload_needs_a_lower_ttft_too():
    rows = [_row("trellis", "shared_system", 50.0, 2.5), _row("llama.cpp-F32", "shared_system", 10.0, 2.0)]
    (v,) = [v for v in verdicts(_result(rows)) if v["workload"] == "shared_system"]
    assert v["status"] == "MISSED" and not v["ttft_ok"]


def test_no_share_needs_only_parity_with_llama_cpp_f32():
    rows = [
        _row("trellis", "no_share", 10.0, 9.0),
        _row("llama.cpp-F32", "no_share", 10.0, 1.0),
        _row("llama.cpp-Q4_1", "no_share", 99.0, 1.0),
    ]
    (v,) = [v for v in verdicts(_result(rows)) if v["workload"] == "no_share"]
    assert v["status"] == "met"


def test_missing_trellis_is_reported_not_measured():
    rows = [_row("llama.cpp-F32", "no_share", 10.0, 1.0)]
    assert {v["status"] for v in verdicts(_result(rows))} == {"NOT MEASURED"}


def test_markdown_names_skipped_systems_and_the_command():
    text = markdown(_result([_row("trellis", "no_share", 1.0, 1.0)]), "python -m tools.bench run")
    assert text.startswith(SECTION_TITLE)
    assert "skipped **hf**: no torch" in text and "python -m tools.bench run" in text


def test_table_shows_the_median_and_the_spread_of_repeats():
    row = dict(_row("trellis", "no_share", 6.0, 1.0), repeats=3, output_tokens_per_s_range=[4.0, 9.0])
    assert "| no_share | trellis | 3 | 6.0 (4.0–9.0) |" in markdown(_result([row]), "cmd")


def test_update_section_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "B.md"
    path.write_text(f"# B\n\n## Radix cache\nkeep me\n\n{SECTION_TITLE}\nold\n\n## Later\nkeep too\n")
    update_section(path, f"{SECTION_TITLE}\nnew\n")
    text = path.read_text()
    assert "old" not in text and "new" in text and "keep me" in text and "## Later\nkeep too" in text


def test_update_section_appends_when_absent(tmp_path):
    path = tmp_path / "B.md"
    path.write_text("# B\n\n## Radix cache\nkeep me\n")
    update_section(path, f"{SECTION_TITLE}\nnew\n")
    assert path.read_text().endswith(f"keep me\n\n{SECTION_TITLE}\nnew\n")


def test_agreement_counts_identical_outputs_per_request():
    from tools.bench.agreement import agreement

    def run(system, outs):
        return {
            "system": system,
            "workload": "w",
            "repeat": 0,
            "results": [{"id": i, "output_token_ids": o} for i, o in enumerate(outs)],
        }

    runs = [run("hf", [[1, 2], [3, 4]]), run("trellis", [[1, 2], [3, 5]]), run("llama", [[], []])]
    assert agreement(runs) == {"trellis": (1, 2)}


def test_trellis_bf16_is_judged_against_llama_cpp_bf16_on_the_control():
    rows = [
        _row("trellis-bf16", "no_share", 10.0, 1.0),
        _row("llama.cpp-F32", "no_share", 5.0, 1.0),
        _row("llama.cpp-BF16", "no_share", 12.0, 1.0),
    ]
    (v,) = [v for v in verdicts(_result(rows), "trellis-bf16") if v["workload"] == "no_share"]
    assert v["status"] == "MISSED" and v["best_peer"] == "llama.cpp-BF16"


def test_trellis_auto_is_judged_in_the_precision_its_runner_recorded():
    rows = [
        _row("trellis", "no_share", 10.0, 1.0),
        _row("llama.cpp-F32", "no_share", 5.0, 1.0),
        _row("llama.cpp-BF16", "no_share", 12.0, 1.0),
    ]
    result = dict(_result(rows), systems={"trellis": {"precision": "bfloat16"}})
    (v,) = [v for v in verdicts(result) if v["workload"] == "no_share"]
    assert v["status"] == "MISSED" and v["best_peer"] == "llama.cpp-BF16"


def test_the_issue_s_list_leaves_llama_cpp_bf16_out_of_the_shared_targets():
    rows = [
        _row("trellis", "shared_system", 30.0, 1.0),
        _row("llama.cpp-F32", "shared_system", 10.0, 2.0),
        _row("llama.cpp-BF16", "shared_system", 20.0, 3.0),
    ]
    (every,) = [v for v in verdicts(_result(rows)) if v["workload"] == "shared_system"]
    (issue,) = [v for v in verdicts(_result(rows), issue_peers_only=True) if v["workload"] == "shared_system"]
    assert every["status"] == "MISSED" and every["best_peer"] == "llama.cpp-BF16"
    assert issue["status"] == "met" and issue["best_peer"] == "llama.cpp-F32" and issue["ratio"] == 3.0


def test_update_section_starts_a_missing_page_with_its_heading(tmp_path):
    path = tmp_path / "latest-run.md"
    update_section(path, f"{SECTION_TITLE}\nnew\n", heading="# Latest run")
    assert path.read_text() == f"# Latest run\n\n{SECTION_TITLE}\nnew\n"
