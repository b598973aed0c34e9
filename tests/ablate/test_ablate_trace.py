"""Trace files: JSONL round trip, the accepted field spellings, and clear errors for bad input."""

import json

import numpy as np
import pytest

from trellis_jax.ablate.trace import SYNTHETIC_TOKEN_BASE, Trace, TraceError, TraceRequest, read_jsonl, write_jsonl


def write_lines(path, *records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_round_trip_keeps_every_field(tmp_path):
    trace = Trace([TraceRequest("a", [1, 2, 3], [4], "t1", 0.5), TraceRequest("b", [5], [], "", 1.0)])
    write_jsonl(trace, tmp_path / "t.jsonl")
    back = read_jsonl(tmp_path / "t.jsonl")
    assert [
        (r.request_id, r.prompt.tolist(), r.output.tolist(), r.namespace, r.arrival_time) for r in back.requests
    ] == [("a", [1, 2, 3], [4], "t1", 0.5), ("b", [5], [], "", 1.0)]


def test_benchmark_harness_spelling_is_accepted(tmp_path):
    path = write_lines(
        tmp_path / "b.jsonl", {"id": "x", "prompt": "ignored", "prompt_token_ids": [7, 8], "max_tokens": 3}
    )
    request = read_jsonl(path).requests[0]
    assert request.prompt.tolist() == [7, 8] and request.output_len == 3


def test_output_len_gives_fresh_tokens_nobody_shares(tmp_path):
    path = write_lines(
        tmp_path / "o.jsonl", {"prompt_tokens": [1], "output_len": 3}, {"prompt_tokens": [1], "output_len": 2}
    )
    a, b = read_jsonl(path).requests
    assert set(a.output.tolist()).isdisjoint(b.output.tolist())
    assert min(a.output.min(), b.output.min()) >= SYNTHETIC_TOKEN_BASE


def test_text_prompt_without_tokenizer_names_the_line(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", {"prompt_tokens": [1]}, {"prompt": "hello"})
    with pytest.raises(TraceError, match=r"t.jsonl:2: .*tokenizer"):
        read_jsonl(path)


def test_text_prompt_goes_through_the_tokenizer(tmp_path):
    class ByteTokenizer:
        def encode(self, text, parse_special=True, add_bos=None):
            return list(text.encode())

    path = write_lines(tmp_path / "t.jsonl", {"prompt": "hi", "output": "yo"})
    request = read_jsonl(path, tokenizer=ByteTokenizer()).requests[0]
    assert request.prompt.tolist() == [104, 105] and request.output.tolist() == [121, 111]


@pytest.mark.parametrize("prompt", [[], [-1], [1.5], [[1, 2]]])
def test_bad_prompts_are_rejected(prompt):
    with pytest.raises(TraceError):
        TraceRequest("r", prompt, [])


def test_arrival_times_for_some_requests_only_are_rejected():
    with pytest.raises(TraceError, match="every request or for none"):
        Trace([TraceRequest("a", [1], [], arrival_time=0.0), TraceRequest("b", [1], [])])


def test_arrival_times_out_of_order_are_rejected():
    with pytest.raises(TraceError, match="arrival order"):
        Trace([TraceRequest("a", [1], [], arrival_time=2.0), TraceRequest("b", [1], [], arrival_time=1.0)])


def test_tokens_are_stored_as_int32():
    assert TraceRequest("a", np.arange(3, dtype=np.int64), []).prompt.dtype == np.int32
