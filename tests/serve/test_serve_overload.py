"""A small run of tools/overload_test.py on the fake engine: a burst far past the request cap is refused
with well-formed 429s, nothing else fails, the server gives its slots back and exits cleanly."""

from __future__ import annotations

import importlib.util
import json
import os

TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "overload_test.py")


def test_a_burst_past_the_cap_is_429s_and_no_5xx(tmp_path):
    spec = importlib.util.spec_from_file_location("overload_test", TOOL)
    overload_test = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(overload_test)
    out = tmp_path / "summary.json"
    argv = [
        "--fake",
        "--fake-step-s",
        "0.2",
        "--requests",
        "60",
        "--max-num-seqs",
        "2",
        "--max-waiting-requests",
        "2",
        "--out",
        str(out),
    ]
    status = overload_test.main(argv)
    summary = json.loads(out.read_text())
    assert status == 0
    assert summary["status_5xx"] == summary["connection_errors"] == summary["malformed_429"] == 0
    assert summary["status_429"] >= 50 and summary["status_200"] + summary["status_429"] == 60
    assert summary["after_burst_status"] == 200 and summary["server_exit_code"] == 0
