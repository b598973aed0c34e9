"""Tool calls in chat responses: the message of a whole reply, and a stream's choice deltas in OpenAI's shape.

A stream sends content deltas for text outside calls (held back while it may still open a call) and,
per call, two deltas: `{index, id, type: "function", function: {name, arguments: ""}}`, then
`{index, function: {arguments: <the whole JSON>}}` (a call is sent once it is complete, so its arguments
always parse). The last chunk's finish_reason is "tool_calls" when the reply made calls and stopped on
its own ("length" and "abort" stay as they are). Both paths run the same extractor, so a stream's deltas
reassemble to the whole reply's message.
"""

from __future__ import annotations

from trellis_jax.serve.tool_calls.calls import ToolCall, extract
from trellis_jax.serve.tool_calls.choice import ToolPlan


def finish_reason(reason: str | None, made_calls: bool) -> str | None:
    return "tool_calls" if made_calls and reason == "stop" else reason


def message(plan: ToolPlan, text: str, reason: str | None) -> tuple[dict, str | None]:
    """(the assistant message, its finish_reason) of a whole reply."""
    found = extract(plan.extractor(), text)
    body: dict = {"role": "assistant", "content": found.content}
    if found.calls:
        body["tool_calls"] = [call.as_json() for call in found.calls]
    return body, finish_reason(reason, bool(found.calls))


class ChoiceStream:
    """One choice's stream: text deltas in, OpenAI choice deltas out."""

    def __init__(self, plan: ToolPlan, index: int):
        self.extractor = plan.extractor()
        self.index = index
        self.num_calls = 0

    def choices(self, text: str, reason: str | None, logprobs: dict | None) -> list[dict]:
        """Choice dicts for one engine delta (`reason` set on its last one); `logprobs` ride on the first."""
        pieces = self.extractor.feed(text) if text else []
        if reason is not None:
            pieces += self.extractor.finish()
        deltas: list[dict] = []
        for piece in pieces:
            if isinstance(piece, ToolCall):
                deltas += self._call_deltas(piece)
            elif deltas and "content" in deltas[-1]:
                deltas[-1]["content"] += piece
            else:
                deltas.append({"content": piece})
        if not deltas and reason is None and logprobs is None:
            return []
        deltas = deltas or [{}]
        out = [{"index": self.index, "delta": d, "logprobs": None, "finish_reason": None} for d in deltas]
        out[0]["logprobs"] = logprobs
        out[-1]["finish_reason"] = finish_reason(reason, self.num_calls > 0)
        return out

    def _call_deltas(self, call: ToolCall) -> list[dict]:
        k = self.num_calls
        self.num_calls += 1
        head = {"index": k, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        return [{"tool_calls": [head]}, {"tool_calls": [{"index": k, "function": {"arguments": call.arguments}}]}]
