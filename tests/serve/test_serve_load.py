"""A small run of tools/load_test.py on the fake engine: concurrent streams with hang-ups leave no 5xx,
every completed output equals the same request run alone, and the engine returns to idle, intact."""

from __future__ import annotations

import importlib.util
import json
import os

TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "load_test.py")


def test_concurrent_streams_with_hang_ups(tmp_path):
    spec = importlib.util.spec_from_file_location("load_test", TOOL)
    load_test = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(load_test)
    out = tmp_path / "summary.json"
    status = load_test.main(["--fake", "--requests", "120", "--clients", "24", "--out", str(out)])
    summary = json.loads(out.read_text())
    assert status == 0
    assert summary["status_5xx"] == 0 and summary["mismatched_outputs"] == 0
    assert summary["hung_up"] > 0 and summary["completed"] + summary["hung_up"] == 120
    assert summary["idle_after"] and summary["locked_pages"] == summary["private_pages"] == 0
