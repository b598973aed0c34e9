"""Line formats of the offline batch job (`python -m trellis_jax.batch`).

Input, one JSON object per line (UTF-8): {"id", "prompt"} (raw text; special tokens in it are parsed as
the model's) or {"id", "messages"} (a chat; special-token text in it is plain text unless the job runs
with --allow-special-tokens-in-content), plus optional OpenAI-style sampling fields (max_tokens,
temperature, top_p, stop, seed, n, logprobs, ... see SamplingParams.from_openai). An id is a non-empty
string or an integer and keeps its JSON type: 7 and "7" are different ids, each written back as given.

Output, one per line: a result {"id", "text", "token_ids", "prompt_tokens", "cached_tokens",
"finish_reason"} (+ "choices" when n > 1), or an error record {"id" (null when unknown), "line",
"error", "line_sha256"} for an input line that cannot run (not UTF-8, not JSON, invalid text, wrong
types, over max_line_bytes, a prompt too long for the model, ...).

An output file is resumable: lines whose id already has a result, and lines whose exact bytes already
have an error record, are skipped, so rerunning a finished job changes nothing; an edited line runs
again. A torn last line (a crash mid-write) is cut off before appending.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from trellis_jax.engine.outputs import RequestOutput
from trellis_jax.engine.sampling_params import SAMPLING_BODY_KEYS, SamplingParams
from trellis_jax.tokenizer.valid_text import find_invalid_text

PROMPT_KEYS = ("prompt", "messages")
MAX_LINE_BYTES = 16 * 2**20  # longer lines are reported, never read whole into memory
_CHUNK = 2**20

RequestId = str | int


def id_key(request_id: RequestId) -> str:
    """A str that tells ids of different JSON types apart (7 -> '7', "7" -> '"7"'): engine request ids, resume."""
    return json.dumps(request_id, ensure_ascii=False)


class BadLine(ValueError):
    """An input line that cannot be run; the message names the problem, `request_id` is its id if known."""

    def __init__(self, message: str, request_id: RequestId | None = None):
        super().__init__(message)
        self.request_id = request_id


@dataclass(frozen=True)
class BatchItem:
    line_number: int
    request_id: RequestId
    prompt: str | list[dict]
    sampling: SamplingParams
    line_sha256: str = ""

    @property
    def key(self) -> str:
        return id_key(self.request_id)


@dataclass(frozen=True)
class LineError:
    line_number: int
    request_id: RequestId | None
    message: str
    line_sha256: str


@dataclass
class DoneInOutput:
    """What an output file already holds: result ids (as id_key) and the hashes of lines that failed."""

    result_keys: set[str] = field(default_factory=set)
    failed_lines: set[str] = field(default_factory=set)


# Every key a line may carry; any other is an error record, never silently dropped (a "tools" or a misspelt
# "temprature" would otherwise give a different reply than the line asks for).
LINE_KEYS = frozenset(
    {
        "id",
        "model",
        *PROMPT_KEYS,
        "max_tokens",
        "max_completion_tokens",
        "logprobs",
        "top_logprobs",
        "stop",
        "response_format",
        *SAMPLING_BODY_KEYS,
    }
)


def parse_line(line_number: int, line: str, default_sampling: SamplingParams, line_sha256: str = "") -> BatchItem:
    try:
        body = json.loads(line)
    except json.JSONDecodeError as error:
        raise BadLine(f"not valid JSON ({error.msg} at column {error.colno})") from None
    except (ValueError, RecursionError) as error:  # a 5000-digit number, nesting deeper than Python's stack
        raise BadLine(f"not readable JSON ({type(error).__name__}: {str(error)[:200]})") from None
    if not isinstance(body, dict):
        raise BadLine("a line must be a JSON object")
    request_id = _id_of(body)
    invalid = find_invalid_text(body)
    if invalid is not None:
        raise BadLine(f"{invalid[0]} {invalid[1]}", request_id)
    if request_id is None:
        raise BadLine('missing or invalid "id" (a non-empty string or an integer)')
    prompt = _prompt_of(body, request_id)
    unread = sorted(set(body) - LINE_KEYS)
    if unread:
        raise BadLine(
            f"field {unread[0]!r} is not supported by the batch job (it reads {', '.join(sorted(LINE_KEYS))})",
            request_id,
        )
    defaults = {f: getattr(default_sampling, f) for f in ("max_tokens", "temperature")}
    try:
        sampling = SamplingParams.from_openai(body, **defaults)
    except (ValueError, TypeError, OverflowError) as error:
        raise BadLine(str(error), request_id) from None
    return BatchItem(line_number, request_id, prompt, sampling, line_sha256)


def _id_of(body: dict) -> RequestId | None:
    request_id = body.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, (str, int)) or request_id == "":
        return None
    if isinstance(request_id, str) and find_invalid_text(request_id) is not None:
        return None
    return request_id


def _prompt_of(body: dict, request_id: RequestId) -> str | list[dict]:
    present = [k for k in PROMPT_KEYS if k in body]
    if len(present) != 1:
        raise BadLine('give exactly one of "prompt" (text) or "messages" (a chat)', request_id)
    if "prompt" in body:
        if not isinstance(body["prompt"], str) or not body["prompt"]:
            raise BadLine('"prompt" must be a non-empty string', request_id)
        return body["prompt"]
    messages = body["messages"]
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in messages)
    ):
        raise BadLine('"messages" must be a non-empty list of {"role", "content"} objects', request_id)
    return messages


def read_items(
    path: str, default_sampling: SamplingParams, *, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[BatchItem | LineError]:
    """A BatchItem per good line and a LineError per bad one; blank lines are skipped. Never raises for
    what a line holds: one line cannot stop the others."""
    for number, raw, digest in _raw_lines(path, max_line_bytes):
        if raw is None:
            yield LineError(number, None, f"line longer than {max_line_bytes} bytes", digest)
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            yield LineError(
                number, None, f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at byte {error.start + 1})", digest
            )
            continue
        if not text.strip():
            continue
        try:
            yield parse_line(number, text, default_sampling, digest)
        except BadLine as error:
            yield LineError(number, error.request_id, str(error), digest)
        except RecursionError:  # JSON nested nearly as deep as Python's stack: json read it, the checks cannot
            yield LineError(number, None, "JSON nested too deeply", digest)


def _raw_lines(path: str, max_line_bytes: int) -> Iterator[tuple[int, bytes | None, str]]:
    """(line number, bytes without the line ending or None when over max_line_bytes, sha256 of those bytes)."""
    with open(path, "rb") as lines:
        number = 0
        while True:
            raw = lines.readline(max_line_bytes + 1)
            if not raw:
                return
            number += 1
            digest = hashlib.sha256()
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # hash the rest in chunks, never hold it whole
                    digest.update(raw)
                    raw = lines.readline(_CHUNK)
                digest.update(raw.rstrip(b"\r\n"))
                yield number, None, digest.hexdigest()
                continue
            raw = raw.rstrip(b"\r\n")
            digest.update(raw)
            yield number, raw, digest.hexdigest()


def read_done(path: str) -> DoneInOutput:
    """What an output file already holds; cuts off a torn last line so appending stays valid JSONL."""
    done = DoneInOutput()
    if not os.path.exists(path):
        return done
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with open(path, "wb") as f:
            f.write(data)
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            if "error" in record:
                done.failed_lines.add(record["line_sha256"])
            else:
                done.result_keys.add(id_key(record["id"]))
        except (ValueError, KeyError, TypeError):
            continue
    return done


def result_line(output: RequestOutput, request_id: RequestId) -> str:
    record = {
        "id": request_id,
        "text": output.text,
        "token_ids": output.token_ids,
        "prompt_tokens": output.num_prompt_tokens,
        "cached_tokens": output.num_cached_tokens,
        "finish_reason": output.finish_reason,
    }
    if len(output.outputs) > 1:
        record["choices"] = [
            {"index": c.index, "text": c.text, "token_ids": c.token_ids, "finish_reason": c.finish_reason}
            for c in output.outputs
        ]
    return json.dumps(record, ensure_ascii=False) + "\n"


def error_line(error: LineError) -> str:
    message = error.message.encode("utf-8", "backslashreplace").decode("utf-8")  # keep the file valid UTF-8
    record = {"id": error.request_id, "line": error.line_number, "error": message, "line_sha256": error.line_sha256}
    return json.dumps(record, ensure_ascii=False) + "\n"
