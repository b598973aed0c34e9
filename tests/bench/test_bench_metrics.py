"""Metrics: nearest-rank percentiles, per-run rates and prefill counts, medians over repeats."""

import pytest

from tools.bench.metrics import percentile, run_metrics, summarize
from tools.bench.runners.base import RequestResult


def _result(first, finish, computed=10, prompt=30, out=4):
    return RequestResult("r", 0, 0.0, first, finish, prompt, out, computed)


def test_percentile_is_nearest_rank():
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 99) == 5.0
    assert percentile(values, 0) == 1.0


def test_percentile_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        percentile([], 50)


def test_run_metrics_rates_over_wall_time():
    m = run_metrics(
        [_result(1.0, 2.0), _result(3.0, 4.0)], 4.0, reusable_tokens=20, kv_peak_bytes=None, rss_peak_bytes=7
    )
    assert m["requests_per_s"] == 0.5
    assert m["output_tokens_per_s"] == 2.0
    assert (m["ttft_p50_s"], m["ttft_p99_s"]) == (1.0, 3.0)


def test_prefill_skipped_is_prompt_minus_computed():
    m = run_metrics(
        [_result(1, 2, computed=10), _result(1, 2, computed=5)],
        2.0,
        reusable_tokens=0,
        kv_peak_bytes=1,
        rss_peak_bytes=1,
    )
    assert (m["prefill_computed"], m["prefill_skipped"]) == (15, 45)


def test_prefill_is_unknown_when_any_request_does_not_report_it():
    m = run_metrics(
        [_result(1, 2, computed=None), _result(1, 2)], 2.0, reusable_tokens=0, kv_peak_bytes=None, rss_peak_bytes=1
    )
    assert m["prefill_computed"] is None and m["prefill_skipped"] is None


def test_summarize_takes_medians_per_system_and_workload():
    def run(system, tps):
        return {"system": system, "workload": "w", "ttfts_s": [tps], "output_tokens_per_s": tps, "kv_peak_bytes": None}

    summary = summarize([run("a", 1.0), run("a", 5.0), run("a", 2.0), run("b", 9.0)])
    assert summary[("a", "w")]["output_tokens_per_s"] == 2.0
    assert summary[("a", "w")]["repeats"] == 3
    assert summary[("a", "w")]["kv_peak_bytes"] is None
    assert summary[("b", "w")]["ttfts_s"] == [9.0]


def test_summarize_keeps_the_spread_of_throughput_over_repeats():
    runs = [{"system": "a", "workload": "w", "ttfts_s": [], "output_tokens_per_s": tps} for tps in (4.0, 9.0, 6.0)]
    assert summarize(runs)[("a", "w")]["output_tokens_per_s_range"] == [4.0, 9.0]
