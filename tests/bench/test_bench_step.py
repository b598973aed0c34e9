"""tools/bench_step.py: --weight-format reaches the loader in every mode that times one model, and is refused
beside the comparisons that pick the weight formats themselves; `report`, the output every step bench shares."""

import json
import pathlib
import sys

import pytest

# The tools import each other by bare name (as when run as scripts): one module object each.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tools"))

import bench_step  # noqa: E402

TINY = ["--model", "tiny-llama", "--batches", "1", "--repeats", "1"]


class Loaded(Exception):
    """Raised by the fake loader: the test needs the load's arguments, not a benchmark."""


@pytest.fixture
def load_calls(monkeypatch):
    calls = []

    def fake_load_model(spec, **options):
        calls.append(options)
        raise Loaded

    monkeypatch.setattr(bench_step, "load_model", fake_load_model)
    return calls


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param([], id="plain"),
        pytest.param(["--compare-native"], id="native"),
        pytest.param(["--compare-kv-dtype"], id="kv-dtype"),
        pytest.param(["--compare-deterministic"], id="deterministic"),
        pytest.param(["--compare-unroll", "scan", "full"], id="unroll"),
        pytest.param(["--compare-matmul-backend"], id="matmul-backend"),
    ],
)
def test_weight_format_reaches_the_loader(mode, load_calls):
    with pytest.raises(Loaded):
        bench_step.main(TINY + mode + ["--weight-format", "packed"])
    assert load_calls == [{"dtype": "float32", "weight_format": "packed"}]


@pytest.mark.parametrize("mode", ["--compare-weight-format", "--compare-quantization"])
def test_weight_format_is_refused_beside_a_comparison_that_picks_formats(mode, capsys):
    with pytest.raises(SystemExit):
        bench_step.parse_args(TINY + [mode, "--weight-format", "packed"])
    assert "choose the weight formats themselves" in capsys.readouterr().err


def test_an_unknown_weight_format_is_refused(capsys):
    with pytest.raises(SystemExit):
        bench_step.parse_args(TINY + ["--weight-format", "q4"])
    assert "invalid choice: 'q4'" in capsys.readouterr().err


def test_report_prints_the_table_and_writes_the_results_as_json(tmp_path, capsys):
    path = tmp_path / "out.json"
    bench_step.report([{"batch": 1}], "| table |", str(path))
    assert capsys.readouterr().out == "| table |\n"
    assert json.loads(path.read_text()) == [{"batch": 1}]


def test_report_without_a_path_writes_no_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bench_step.report({"a": 1}, "text", None)
    assert capsys.readouterr().out == "text\n" and not list(tmp_path.iterdir())
