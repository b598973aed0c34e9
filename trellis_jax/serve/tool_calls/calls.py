"""What a tool-call parser yields: `ToolCall`s and content text, in output order, and the JSON rule both
formats share for turning a decoded object into calls.

A parser (`hermes.py`, `llama3_json.py`) is an incremental extractor over one choice's text:
`feed(text) -> pieces` and `finish() -> pieces`, a piece being content text (str) or a `ToolCall`.
Non-streaming responses run the same extractor over the whole text (`extract`), so a stream's deltas
always reassemble to the non-streamed message.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # a JSON object, as text (what OpenAI's `function.arguments` carries)
    id: str = field(default_factory=new_call_id)

    def as_json(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


Piece = str | ToolCall


class Extractor(Protocol):
    def feed(self, text: str) -> list[Piece]: ...

    def finish(self) -> list[Piece]: ...


class FirstCallOnly:
    """`parallel_tool_calls: false`: the reply keeps its first call; later ones are dropped."""

    def __init__(self, inner: Extractor):
        self.inner, self.seen_call = inner, False

    def feed(self, text: str) -> list[Piece]:
        return self._keep(self.inner.feed(text))

    def finish(self) -> list[Piece]:
        return self._keep(self.inner.finish())

    def _keep(self, pieces: list[Piece]) -> list[Piece]:
        kept = []
        for piece in pieces:
            if isinstance(piece, ToolCall):
                if self.seen_call:
                    continue
                self.seen_call = True
            kept.append(piece)
        return kept


@dataclass
class Extracted:
    content: str | None  # None when calls were found and no other text was
    calls: list[ToolCall]


def extract(extractor: Extractor, text: str) -> Extracted:
    """Run `extractor` over a whole completion."""
    return collect(extractor.feed(text) + extractor.finish())


def collect(pieces: list[Piece]) -> Extracted:
    calls = [p for p in pieces if isinstance(p, ToolCall)]
    content = "".join(p for p in pieces if isinstance(p, str))
    return Extracted(None if calls and not content else content, calls)


def calls_from_json(
    text: str, *, arguments_keys: tuple[str, ...] = ("arguments", "parameters")
) -> list[ToolCall] | None:
    """The calls a JSON text holds: one object `{"name": str, "arguments": {...}}` or a list of them;
    None when it is not JSON or not that shape (the text then stays content: a model's slip is not a 500).
    `arguments` may be missing (a function without parameters) or a JSON string holding an object."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    items = value if isinstance(value, list) else [value]
    calls = [_call(item, arguments_keys) for item in items]
    return calls if calls and all(c is not None for c in calls) else None


def _call(item: Any, arguments_keys: tuple[str, ...]) -> ToolCall | None:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        return None
    key = next((k for k in arguments_keys if k in item), None)
    arguments = {} if key is None else item[key]
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(item["name"], json.dumps(arguments, ensure_ascii=False))
