"""Import OpenAI-style chat logs (JSONL of message lists) as a trace, one request per assistant turn.

Each line is a conversation: ``{"messages": [{"role": ..., "content": ...}, ...]}`` (the fine-tuning
format; a bare JSON list of messages works too; an optional ``"namespace"`` names the tenant). For every
assistant message at position i the engine would have served::

    prompt = chat template of messages[:i] with the generation prompt   (tokenizer.encode_chat)
    output = the assistant's content tokens + the end-of-turn token      (what the model generated)

so the next turn's prompt (which renders that reply back) hits the cached reply exactly as far as the
template reproduces the generated tokens, as in serving. A conversation that ends on a user message
gives one last request with no output.

Order: ``sequential`` (conversation after conversation) or ``interleaved`` (round-robin over
``concurrent`` open conversations, as a busy server sees them).
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

from trellis_jax.ablate.trace import Trace, TraceError, TraceRequest

ORDERS = ("sequential", "interleaved")


def read_chat_log(
    path: str | Path,
    tokenizer,
    order: str = "interleaved",
    concurrent: int = 8,
    shared_namespaces=(),
    name: str | None = None,
) -> Trace:
    """The trace of every assistant turn in the log (see the module docstring)."""
    if order not in ORDERS:
        raise ValueError(f"unknown chat-log order {order!r}; known: {ORDERS}")
    if concurrent < 1:
        raise ValueError(f"concurrent must be >= 1, got {concurrent}")
    path = Path(path)
    conversations = []
    with path.open() as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    conversations.append(conversation_requests(json.loads(line), tokenizer, f"c{line_no}"))
                except (TraceError, json.JSONDecodeError) as e:
                    raise TraceError(f"{path}:{line_no}: {e}") from None
    requests = (
        _interleave(conversations, concurrent)
        if order == "interleaved"
        else [r for conv in conversations for r in conv]
    )
    return Trace(requests, frozenset(shared_namespaces), name or path.stem)


def conversation_requests(record, tokenizer, conversation_id: str) -> list[TraceRequest]:
    """The requests of one conversation record, in turn order."""
    messages, namespace = _messages(record)
    end_of_turn = list(tokenizer.eos_token_ids[:1])
    requests = []
    for i, message in enumerate(messages):
        if message["role"] == "assistant" and i > 0:
            prompt = tokenizer.encode_chat(messages[:i], add_generation_prompt=True)
            output = tokenizer.encode(message["content"], parse_special=False, add_bos=False) + end_of_turn
            requests.append(TraceRequest(f"{conversation_id}-t{len(requests)}", prompt, output, namespace))
    if messages[-1]["role"] != "assistant":
        prompt = tokenizer.encode_chat(messages, add_generation_prompt=True)
        requests.append(TraceRequest(f"{conversation_id}-t{len(requests)}", prompt, [], namespace))
    return requests


def _messages(record) -> tuple[list[dict], str]:
    if isinstance(record, list):
        record = {"messages": record}
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list) or not record["messages"]:
        raise TraceError("a conversation is a non-empty message list or {'messages': [...]}")
    for m in record["messages"]:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise TraceError(f"each message needs a str 'role' and a str 'content', got {m!r}")
    namespace = record.get("namespace", "")
    if not isinstance(namespace, str):
        raise TraceError(f"namespace must be a str, got {namespace!r}")
    return record["messages"], namespace


def _interleave(conversations: list[list[TraceRequest]], concurrent: int) -> list[TraceRequest]:
    pending = deque(deque(conv) for conv in conversations if conv)
    open_convs: deque[deque] = deque()
    out = []
    while pending or open_convs:
        while pending and len(open_convs) < concurrent:
            open_convs.append(pending.popleft())
        conv = open_convs.popleft()
        out.append(conv.popleft())
        if conv:
            open_convs.append(conv)
    return out
