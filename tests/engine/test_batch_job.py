"""The offline batch job over the fake engine: results, resume, bad lines, torn output."""

import io
import json

import pytest

from trellis_jax.batch import parse_args, run_batch
from trellis_jax.engine.batch_io import id_key
from trellis_testing.fakes import make_fake_engine


def write_lines(path, lines):
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))


def run(tmp_path, lines, **kw):
    engine, runner, cache, tokenizer = make_fake_engine(mode="increment", num_pages=128)
    write_lines(tmp_path / "in.jsonl", lines)
    log = io.StringIO()
    summary = run_batch(
        engine, tokenizer, str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), progress=False, log=log, **kw
    )
    records = [json.loads(l) for l in (tmp_path / "out.jsonl").read_text().splitlines()]
    results = [r for r in records if "error" not in r]  # error records: tests/engine/test_batch_robustness.py
    return summary, results, log.getvalue(), runner


GOOD = [
    {"id": "a", "prompt": "a", "max_tokens": 3, "temperature": 0},
    {"id": "b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    {"id": 7, "prompt": "x", "max_tokens": 20, "stop": ["|"], "temperature": 0},
]


def test_writes_one_result_per_request_with_the_documented_fields(tmp_path):
    summary, results, _, _ = run(tmp_path, GOOD)
    by_id = {r["id"]: r for r in results}
    assert set(by_id) == {"a", "b", 7}
    assert by_id["a"] == {
        "id": "a",
        "text": "bcd",
        "token_ids": [98, 99, 100],
        "prompt_tokens": 1,
        "cached_tokens": 0,
        "finish_reason": "length",
    }
    assert by_id[7]["text"] == "yz{" and by_id[7]["finish_reason"] == "stop"  # "|" follows "{"
    assert summary.completed == 3


def test_bad_lines_are_reported_with_their_number_and_the_rest_runs(tmp_path):
    lines = [
        GOOD[0],
        "{not json",
        {"id": "c"},
        {"id": "d", "prompt": "p", "temperature": -2},
        {"id": "a", "prompt": "dup"},
        GOOD[1],
    ]
    summary, results, log, _ = run(tmp_path, lines)
    assert sorted(r["id"] for r in results) == ["a", "b"]
    assert [n for n, _ in summary.bad_lines] == [2, 3, 4, 5]
    assert "line 2:" in log and "line 4:" in log and "temperature" in log


def test_resume_skips_ids_already_in_the_output(tmp_path):
    run(tmp_path, GOOD[:2])
    summary, results, _, runner = run(tmp_path, GOOD)
    assert summary.skipped_done == 2 and summary.completed == 1
    assert {r["id"] for r in results} == {7, "a", "b"}
    assert {rid for rid, _, _ in runner.computed} == {"7"}  # the engine's request id for the JSON id 7


def test_a_torn_last_output_line_is_cut_and_redone(tmp_path):
    run(tmp_path, GOOD[:1])
    out = tmp_path / "out.jsonl"
    out.write_text(out.read_text() + '{"id": "b", "te')
    summary, results, _, _ = run(tmp_path, GOOD[:2])
    assert sorted(r["id"] for r in results) == ["a", "b"]
    assert summary.completed == 1


def test_a_request_too_long_for_the_pool_is_skipped_not_fatal(tmp_path):
    summary, results, log, _ = run(tmp_path, [{"id": "huge", "prompt": "x" * 1000}, GOOD[0]])
    assert [r["id"] for r in results] == ["a"]
    assert summary.bad_lines[0][0] == 1 and "line 1:" in log


def test_cli_flags_parse():
    args = parse_args(
        [
            "--input",
            "i",
            "--output",
            "o",
            "--disable-radix-cache",
            "--eviction-policy",
            "lfu",
            "--schedule-policy",
            "dfs-weight",
            "--page-size",
            "32",
            "--model",
            "m.gguf",
        ]
    )
    assert (args.disable_radix_cache, args.eviction_policy, args.schedule_policy, args.page_size, args.model) == (
        True,
        "lfu",
        "dfs-weight",
        32,
        "m.gguf",
    )
    with pytest.raises(SystemExit):
        parse_args(["--output", "o"])


def test_batch_cli_passes_the_model_dtype_through():
    from trellis_jax.batch import engine_config, parse_args

    assert engine_config(parse_args(["--input", "i", "--output", "o"])).dtype == "auto"
    assert engine_config(parse_args(["--input", "i", "--output", "o", "--dtype", "bfloat16"])).dtype == "bfloat16"


def test_a_request_a_step_cannot_run_gets_an_error_record_and_the_rest_complete(tmp_path):
    from trellis_testing.fakes import FakeRunner

    class FailsForX(FakeRunner):
        """Packing fails for the rows of request "x" (as an int32 overflow would)."""

        def check_plan(self, plan):
            super().check_plan(plan)
            if any(w.request_id == id_key("x") for w in plan.sequences):
                raise OverflowError("x cannot be packed")

        def run(self, plan):
            self.check_plan(plan)
            return super().run(plan)

    engine, _runner, cache, tokenizer = make_fake_engine(
        mode="increment", num_pages=128, runner=FailsForX(128, 4, mode="increment")
    )
    write_lines(tmp_path / "in.jsonl", [GOOD[0], {"id": "x", "prompt": "q", "max_tokens": 3}, GOOD[2]])
    log = io.StringIO()
    summary = run_batch(
        engine, tokenizer, str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), progress=False, log=log
    )
    results = [json.loads(l) for l in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(str(r["id"]) for r in results if "error" not in r) == ["7", "a"]
    assert [r["id"] for r in results if "error" in r] == ["x"]
    assert [n for n, _ in summary.bad_lines] == [2] and "x cannot be packed" in log.getvalue()
    cache.check_integrity()
