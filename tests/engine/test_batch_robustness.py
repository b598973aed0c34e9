"""No input line can stop the batch job: bad lines (invalid text, not UTF-8, not JSON, wrong types, too
long) get an error record and every good line completes; a rerun is a no-op; ids keep their JSON type."""

from __future__ import annotations

import io
import json

from trellis_jax.batch import run_batch
from trellis_testing.fakes import make_fake_engine

MAX_LINE_BYTES = 12_000


def good(request_id, prompt="a"):
    return json.dumps({"id": request_id, "prompt": prompt, "max_tokens": 2, "temperature": 0}).encode()


BAD_LINES = {  # what each bad line holds -> a fragment of its error message
    b'{"id": "s1", "prompt": "a\\ud800b"}': "prompt holds a lone surrogate U+D800",
    b'{"id": "s2", "messages": [{"role": "user", "content": "\\udc00"}]}': "messages[0].content holds a lone surrogate",
    b'{"id": "s3", "prompt": "a", "stop": ["\\ud800"]}': "stop[0] holds a lone surrogate",
    b'{"id": "u", "prompt": "a\xff"}': "not valid UTF-8",
    b'{"id": "j", "prompt": ': "not valid JSON",
    b'{"id": "t1", "prompt": 5}': '"prompt" must be a non-empty string',
    b'{"id": "t2", "prompt": "a", "max_tokens": "many"}': "max_tokens",
    b'{"id": "t3", "messages": "hi"}': '"messages" must be',
    b'{"id": 1.5, "prompt": "a"}': 'invalid "id"',
    b'{"id": "big", "prompt": "' + b"x" * 30_000 + b'"}': f"longer than {MAX_LINE_BYTES} bytes",
    b'{"id": "long", "prompt": "' + b"x" * 150 + b'"}': "request 'long': needs",  # fits the line, not the KV pool
    b"[" * 5000 + b"]" * 5000: "JSON",  # nested deeper than Python's stack
    b'{"id": "f1", "prompt": "a", "temprature": 0.5}': "field 'temprature' is not supported",  # never dropped
    b'{"id": "f2", "messages": [{"role": "user", "content": "a"}], "tools": []}': "field 'tools' is not supported",
}


def job_input() -> bytes:
    lines = []
    for i, bad in enumerate(BAD_LINES):
        lines += [good(f"g{i}"), bad]
    return b"\n".join(lines + [good(7), good("7", prompt="b")]) + b"\n"


def run(tmp_path, data: bytes | None = None):
    engine, runner, _, tokenizer = make_fake_engine(mode="increment", num_pages=24, page_size=4)
    if data is not None:
        (tmp_path / "in.jsonl").write_bytes(data)
    summary = run_batch(
        engine,
        tokenizer,
        str(tmp_path / "in.jsonl"),
        str(tmp_path / "out.jsonl"),
        progress=False,
        log=io.StringIO(),
        max_line_bytes=MAX_LINE_BYTES,
    )
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    return summary, records, runner


def test_every_good_line_completes_despite_bad_lines(tmp_path):
    summary, records, _ = run(tmp_path, job_input())
    results = [r for r in records if "error" not in r]
    assert [r["id"] for r in results] == [f"g{i}" for i in range(len(BAD_LINES))] + [7, "7"]
    assert all(r["finish_reason"] == "length" for r in results)
    assert summary.completed == len(BAD_LINES) + 2


def test_each_bad_line_gets_an_error_record_with_its_line_number(tmp_path):
    _, records, _ = run(tmp_path, job_input())
    errors = [r for r in records if "error" in r]
    assert sorted(e["line"] for e in errors) == [2 * (i + 1) for i in range(len(BAD_LINES))]
    for error, fragment in zip(sorted(errors, key=lambda e: e["line"]), BAD_LINES.values()):
        assert fragment in error["error"], error


def test_error_records_carry_the_id_when_the_line_has_one(tmp_path):
    _, records, _ = run(tmp_path, job_input())
    ids = {e["line"]: e["id"] for e in records if "error" in e}
    assert (ids[2], ids[8], ids[10]) == ("s1", None, None)  # a surrogate, bytes that are not UTF-8, not JSON


def test_rerun_of_a_finished_job_is_a_noop(tmp_path):
    run(tmp_path, job_input())
    before = (tmp_path / "out.jsonl").read_bytes()
    summary, _, runner = run(tmp_path)
    assert (tmp_path / "out.jsonl").read_bytes() == before
    assert runner.num_steps == 0 and summary.completed == 0 and not summary.bad_lines


def test_a_fixed_bad_line_runs_on_the_rerun(tmp_path):
    run(tmp_path, good("a") + b"\n" + b'{"id": "b", "prompt": \n')
    summary, records, _ = run(tmp_path, good("a") + b"\n" + good("b") + b"\n")
    assert summary.completed == 1 and [r["id"] for r in records if "error" not in r] == ["a", "b"]


def test_int_and_string_ids_are_distinct_and_written_back_with_their_type(tmp_path):
    _, records, _ = run(tmp_path, good(7) + b"\n" + good("7", prompt="b") + b"\n")
    assert [(r["id"], r["text"]) for r in records] == [(7, "bc"), ("7", "cd")]


def test_a_duplicate_id_of_the_same_type_is_an_error_record(tmp_path):
    _, records, _ = run(tmp_path, good(7) + b"\n" + good(7, prompt="b") + b"\n")
    (error,) = [r for r in records if "error" in r]
    assert error["id"] == 7 and error["line"] == 2 and "duplicate id 7 (first on line 1)" in error["error"]
    assert [r["text"] for r in records if "error" not in r] == ["bc"]


def test_resume_tells_int_and_string_ids_apart(tmp_path):
    run(tmp_path, good(7) + b"\n")
    summary, records, _ = run(tmp_path, good(7) + b"\n" + good("7", prompt="b") + b"\n")
    assert summary.skipped_done == 1 and summary.completed == 1
    assert [r["id"] for r in records] == [7, "7"]
