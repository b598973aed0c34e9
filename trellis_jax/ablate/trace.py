"""Traces: the requests a replay feeds to the cache, and their JSONL file format.

A ``TraceRequest`` is what the engine would see and produce: the prompt token ids, the output token ids
it generated (inserted after the prompt, as the engine does, so the next turn of a chat hits them), a
namespace (tenant / cache salt), and an optional arrival time (seconds). A ``Trace`` is an ordered list of
them (arrival order) plus the namespaces declared shared (as ``RadixCache(shared_namespaces=...)``).

JSONL format, one request per line (keys other than these are ignored)::

    {"id": "r1", "prompt_tokens": [1, 2, 3], "output_tokens": [4, 5], "namespace": "a", "arrival_time": 0.5}

- the prompt is ``prompt_tokens`` (or ``prompt_token_ids``, as the benchmark harness writes it); or
  ``prompt`` (text) or ``messages`` (an OpenAI chat message list, rendered with the chat template) when
  a tokenizer is given;
- the output is ``output_tokens``; or ``output`` (text, tokenizer needed); or ``output_len`` (or
  ``max_tokens``): that many synthetic tokens, unique to the request, so nothing later can hit them;
  or nothing (no output).
Bad lines raise ``TraceError`` naming the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Synthetic output tokens (``output_len``) are drawn above every real vocabulary so they never collide.
SYNTHETIC_TOKEN_BASE = 1 << 30
_MAX_TOKEN_ID = np.iinfo(np.int32).max  # ids are stored as int32 (a 100M-token trace fits in 400 MB)


class TraceError(ValueError):
    """A trace or a trace file is malformed."""


@dataclass(frozen=True, eq=False)
class TraceRequest:
    request_id: str
    prompt: np.ndarray  # [prompt_len] int32 token ids, prompt_len >= 1
    output: np.ndarray  # [output_len] int32 token ids the engine generated (may be empty)
    namespace: str = ""
    arrival_time: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "prompt", _as_token_array(self.prompt, f"request {self.request_id!r} prompt"))
        object.__setattr__(self, "output", _as_token_array(self.output, f"request {self.request_id!r} output"))
        if len(self.prompt) == 0:
            raise TraceError(f"request {self.request_id!r} has an empty prompt")
        if not isinstance(self.namespace, str):
            raise TraceError(f"request {self.request_id!r}: namespace must be a str, got {self.namespace!r}")
        if self.arrival_time is not None and not (self.arrival_time >= 0):
            raise TraceError(f"request {self.request_id!r}: arrival_time must be >= 0, got {self.arrival_time!r}")

    @property
    def prompt_len(self) -> int:
        return len(self.prompt)

    @property
    def output_len(self) -> int:
        return len(self.output)


@dataclass(frozen=True)
class Trace:
    requests: list[TraceRequest]
    shared_namespaces: frozenset[str] = field(default_factory=frozenset)
    name: str = "trace"

    def __post_init__(self):
        if not self.requests:
            raise TraceError(f"trace {self.name!r} has no requests")
        timed = [r.arrival_time is not None for r in self.requests]
        if any(timed) and not all(timed):
            raise TraceError(f"trace {self.name!r}: give arrival_time for every request or for none")
        if all(timed) and any(a.arrival_time > b.arrival_time for a, b in zip(self.requests, self.requests[1:])):
            raise TraceError(f"trace {self.name!r}: requests must be listed in arrival order")

    def __len__(self) -> int:
        return len(self.requests)

    @property
    def has_arrival_times(self) -> bool:
        return self.requests[0].arrival_time is not None

    @property
    def num_prompt_tokens(self) -> int:
        return sum(r.prompt_len for r in self.requests)

    @property
    def num_output_tokens(self) -> int:
        return sum(r.output_len for r in self.requests)


def _as_token_array(tokens, what: str) -> np.ndarray:
    array = np.asarray(tokens)
    if array.ndim != 1:
        raise TraceError(f"{what}: token ids must be a flat list, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, np.int32)
    if not np.issubdtype(array.dtype, np.integer):
        raise TraceError(f"{what}: token ids must be ints, got dtype {array.dtype}")
    if array.min() < 0 or array.max() > _MAX_TOKEN_ID:
        raise TraceError(
            f"{what}: token ids must be in [0, {_MAX_TOKEN_ID}], got {int(array.min())}..{int(array.max())}"
        )
    return array.astype(np.int32, copy=False)


# ---- JSONL ------------------------------------------------------------------------------------------
class _SyntheticTokens:
    """Fresh token ids above every vocabulary: each call returns ids never returned before."""

    def __init__(self) -> None:
        self.next = SYNTHETIC_TOKEN_BASE

    def take(self, n: int) -> np.ndarray:
        ids = np.arange(self.next, self.next + n, dtype=np.int32)
        self.next += n
        return ids


def read_jsonl(
    path: str | Path, tokenizer=None, shared_namespaces: Iterable[str] = (), name: str | None = None
) -> Trace:
    """Load a trace file (format in the module docstring); ``tokenizer`` is needed for text fields."""
    path = Path(path)
    synthetic = _SyntheticTokens()
    requests = []
    with path.open() as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                requests.append(_request_from_record(json.loads(line), tokenizer, synthetic, f"r{line_no}"))
            except (TraceError, json.JSONDecodeError, TypeError, KeyError) as e:
                raise TraceError(f"{path}:{line_no}: {e}") from None
    return Trace(requests, frozenset(shared_namespaces), name or path.stem)


def _request_from_record(rec: dict, tokenizer, synthetic: _SyntheticTokens, default_id: str) -> TraceRequest:
    if not isinstance(rec, dict):
        raise TraceError(f"each line must be a JSON object, got {type(rec).__name__}")
    request_id = str(rec.get("id", default_id))
    return TraceRequest(
        request_id,
        _prompt_tokens(rec, tokenizer),
        _output_tokens(rec, tokenizer, synthetic),
        rec.get("namespace", ""),
        rec.get("arrival_time"),
    )


def _prompt_tokens(rec: dict, tokenizer) -> list[int]:
    for key in ("prompt_tokens", "prompt_token_ids"):
        if key in rec:
            return rec[key]
    if "prompt" in rec or "messages" in rec:
        if tokenizer is None:
            raise TraceError("a text prompt ('prompt' or 'messages') needs a tokenizer (--tokenizer)")
        if "messages" in rec:
            return tokenizer.encode_chat(rec["messages"], add_generation_prompt=True)
        return tokenizer.encode(rec["prompt"])
    raise TraceError("no prompt: give 'prompt_tokens', 'prompt' or 'messages'")


def _output_tokens(rec: dict, tokenizer, synthetic: _SyntheticTokens):
    if "output_tokens" in rec:
        return rec["output_tokens"]
    if "output" in rec:
        if tokenizer is None:
            raise TraceError("a text 'output' needs a tokenizer (--tokenizer)")
        return tokenizer.encode(rec["output"], parse_special=False, add_bos=False)
    if "output_len" in rec or "max_tokens" in rec:
        n = rec.get("output_len", rec.get("max_tokens"))
        if not isinstance(n, int) or n < 0:
            raise TraceError(f"output_len must be an int >= 0, got {n!r}")
        return synthetic.take(n)
    return []


def iter_records(trace: Trace) -> Iterator[dict]:
    for r in trace.requests:
        rec = {"id": r.request_id, "prompt_tokens": r.prompt.tolist(), "output_tokens": r.output.tolist()}
        if r.namespace:
            rec["namespace"] = r.namespace
        if r.arrival_time is not None:
            rec["arrival_time"] = r.arrival_time
        yield rec


def write_jsonl(trace: Trace, path: str | Path) -> None:
    """Write a token-id trace that ``read_jsonl`` loads back unchanged."""
    with Path(path).open("w") as f:
        for rec in iter_records(trace):
            f.write(json.dumps(rec) + "\n")
