"""Hermes / Qwen tool calls: `<tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>`, any number of
them, with text around them (NousResearch Hermes 2 Pro, Qwen2/2.5/3, and what `tool_prompt.py` asks a model
whose template knows no tools to write). A call body may also be a JSON list of such objects.

The extractor streams: text is content as soon as it cannot be the start of `<tool_call>`; a call is
yielded when its `</tool_call>` arrives (so its arguments are whole and parse). Whitespace that only
separates content from calls is dropped ("Sure.\n<tool_call>..." -> content "Sure."), and a body that is
not a call (bad JSON, no name) stays content, tags included. At the end an unclosed call whose JSON is
whole counts (a model that stops right after the object); anything else left over is content.
"""

from __future__ import annotations

from trellis_jax.serve.tool_calls.calls import Piece, calls_from_json

START, END = "<tool_call>", "</tool_call>"


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper prefix of `tag` (it may become the tag)."""
    for n in range(min(len(text), len(tag) - 1), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class HermesExtractor:
    def __init__(self) -> None:
        self._buf = ""  # text not yet decided: a possible tag start, or an open call's body
        self._in_call = False
        self._held_space = ""  # whitespace after the last content: dropped if a call follows
        self._after_call = False  # drop whitespace that starts the next content
        self._any_call = False

    def feed(self, text: str) -> list[Piece]:
        self._buf += text
        out: list[Piece] = []
        while True:
            if self._in_call:
                end = self._buf.find(END)
                if end < 0:
                    return out
                body, self._buf = self._buf[:end], self._buf[end + len(END) :]
                self._in_call = False
                out += self._close(body, START + body + END)
            else:
                start = self._buf.find(START)
                if start < 0:
                    keep = _partial_suffix(self._buf, START)
                    ready, self._buf = self._buf[: len(self._buf) - keep], self._buf[len(self._buf) - keep :]
                    out += self._content(ready)
                    return out
                out += self._content(self._buf[:start])
                self._buf, self._in_call = self._buf[start + len(START) :], True

    def finish(self) -> list[Piece]:
        out: list[Piece] = []
        if self._in_call:
            out += self._close(self._buf, START + self._buf)
        else:
            out += self._content(self._buf)
        self._buf, self._in_call = "", False
        if not self._any_call and self._held_space:
            out.append(self._held_space)
        self._held_space = ""
        return out

    def _close(self, body: str, as_text: str) -> list[Piece]:
        calls = calls_from_json(body.strip())
        if calls is None:
            return self._content(as_text)
        self._held_space, self._after_call, self._any_call = "", True, True
        return list(calls)

    def _content(self, text: str) -> list[Piece]:
        """Content, but its trailing whitespace is held until we know whether a call follows it."""
        if self._after_call:
            text = text.lstrip()
            self._after_call = not text
        text = self._held_space + text
        kept = text.rstrip()
        self._held_space = text[len(kept) :]
        return [kept] if kept else []
