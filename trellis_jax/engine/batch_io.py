"""Line formats of the offline batch job (`python -m trellis_jax.batch`).

Input, one JSON object per line: {"id", "prompt"} (raw text; special tokens in it are parsed as the
model's) or {"id", "messages"} (a chat), plus optional OpenAI-style sampling fields (max_tokens,
temperature, top_p, stop, seed, n, logprobs, ... see SamplingParams.from_openai). Output, one per line:
{"id", "text", "token_ids", "prompt_tokens", "cached_tokens", "finish_reason"} (+ "choices" when n > 1).
An output file is resumable: the ids it already holds are skipped; a torn last line (a crash mid-write)
is cut off before appending.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

from trellis_jax.engine.outputs import RequestOutput
from trellis_jax.engine.sampling_params import SamplingParams

PROMPT_KEYS = ("prompt", "messages")


class BadLine(ValueError):
    """An input line that cannot be run; the message names the problem."""


@dataclass(frozen=True)
class BatchItem:
    line_number: int
    request_id: str
    prompt: str | list[dict]
    sampling: SamplingParams


def parse_line(line_number: int, line: str, default_sampling: SamplingParams) -> BatchItem:
    try:
        body = json.loads(line)
    except json.JSONDecodeError as error:
        raise BadLine(f"not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(body, dict):
        raise BadLine("a line must be a JSON object")
    request_id = body.get("id")
    if not isinstance(request_id, (str, int)) or isinstance(request_id, bool) or request_id == "":
        raise BadLine('missing or invalid "id" (a non-empty string or an integer)')
    prompt = _prompt_of(body)
    defaults = {f: getattr(default_sampling, f) for f in ("max_tokens", "temperature")}
    try:
        sampling = SamplingParams.from_openai(body, **defaults)
    except (ValueError, TypeError) as error:
        raise BadLine(str(error)) from None
    return BatchItem(line_number, str(request_id), prompt, sampling)


def _prompt_of(body: dict) -> str | list[dict]:
    present = [k for k in PROMPT_KEYS if k in body]
    if len(present) != 1:
        raise BadLine('give exactly one of "prompt" (text) or "messages" (a chat)')
    if "prompt" in body:
        if not isinstance(body["prompt"], str) or not body["prompt"]:
            raise BadLine('"prompt" must be a non-empty string')
        return body["prompt"]
    messages = body["messages"]
    if (not isinstance(messages, list) or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in messages)):
        raise BadLine('"messages" must be a non-empty list of {"role", "content"} objects')
    return messages


def read_items(path: str, default_sampling: SamplingParams) -> Iterator[BatchItem | tuple[int, str]]:
    """Yields a BatchItem per good line and (line number, reason) per bad one; blank lines are skipped."""
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield parse_line(number, line, default_sampling)
            except BadLine as error:
                yield number, str(error)


def completed_ids(path: str) -> set[str]:
    """Ids already in an output file; cuts off a torn last line so appending stays valid JSONL."""
    if not os.path.exists(path):
        return set()
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        data = data[:data.rfind(b"\n") + 1]
        with open(path, "wb") as f:
            f.write(data)
    done = set()
    for line in data.decode("utf-8").splitlines():
        try:
            done.add(str(json.loads(line)["id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return done


def result_line(output: RequestOutput, request_id: str) -> str:
    record = {
        "id": request_id, "text": output.text, "token_ids": output.token_ids,
        "prompt_tokens": output.num_prompt_tokens, "cached_tokens": output.num_cached_tokens,
        "finish_reason": output.finish_reason,
    }
    if len(output.outputs) > 1:
        record["choices"] = [{"index": c.index, "text": c.text, "token_ids": c.token_ids,
                              "finish_reason": c.finish_reason} for c in output.outputs]
    return json.dumps(record, ensure_ascii=False) + "\n"
