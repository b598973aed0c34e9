"""Llama 3.1 / 3.2 JSON tool calls: the whole reply is `{"name": "f", "parameters": {...}}` (or "arguments"),
optionally after `<|python_tag|>`, several separated by `;`.

The extractor streams plain text at once when the reply does not open with `{` or `<|python_tag|>`;
otherwise it holds the reply to the end and yields its calls (content null), or the held text as content
when it is not a sequence of calls (JSON the user asked for, a slip of the model).
"""

from __future__ import annotations

import json

from trellis_jax.serve.tool_calls.calls import Piece, ToolCall, calls_from_json

PYTHON_TAG = "<|python_tag|>"


class Llama3JsonExtractor:
    def __init__(self) -> None:
        self._buf = ""
        self._mode = "undecided"  # -> "text" (stream as content) or "json" (hold to the end)

    def feed(self, text: str) -> list[Piece]:
        if self._mode == "text":
            return [text] if text else []
        self._buf += text
        if self._mode == "undecided":
            head = self._buf.lstrip()
            if head.startswith(("{", PYTHON_TAG)):
                self._mode = "json"
            elif head and not PYTHON_TAG.startswith(head):
                self._mode, ready, self._buf = "text", self._buf, ""
                return [ready]
        return []

    def finish(self) -> list[Piece]:
        held, self._buf = self._buf, ""
        if self._mode == "json":
            calls = _calls(held.strip().removeprefix(PYTHON_TAG))
            if calls is not None:
                return list(calls)
        return [held] if held else []


def _calls(text: str) -> list[ToolCall] | None:
    """Calls from `{...}; {...}`: each object decoded in turn, so a `;` inside a string is no separator."""
    decoder, calls, at = json.JSONDecoder(), [], 0
    while at < len(text):
        try:
            _, end = decoder.raw_decode(text, at)
        except ValueError:
            return None
        found = calls_from_json(text[at:end], arguments_keys=("parameters", "arguments"))
        if found is None or len(found) != 1:
            return None
        calls += found
        at = end
        while at < len(text) and text[at] in " \t\r\n;":
            at += 1
    return calls or None
