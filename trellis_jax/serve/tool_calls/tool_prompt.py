"""Tools for a chat template that does not render them: the tool list goes into the system message, and
past calls and their results become text, in the format the server parses (`formats.py`), so the model
is told about the tools it may call (accepted means honoured) and a two-turn tool conversation renders.

The wording follows Qwen2.5's template (Hermes format); for Llama 3.1 JSON, Llama's own instruction.
A template that renders tools (or calls) itself gets them untouched.
"""

from __future__ import annotations

import json

from trellis_jax.serve.tool_calls.formats import ToolFormat

_HERMES = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""

_LLAMA3_JSON = """You have access to the following functions:

{tools}

To call a function, respond only with a JSON object of the form {{"name": <function-name>, "parameters": <args-json-object>}}; do not use variables."""


def prepare(messages: list[dict], tools: list[dict] | None, fmt: ToolFormat) -> tuple[list[dict], list[dict] | None]:
    """(messages, tools) to hand the chat template."""
    if not fmt.template_renders_calls:
        messages = [_as_text(m, fmt.parser) for m in messages]
    if tools and not fmt.template_renders_tools:
        messages = _with_system_text(messages, _instructions(tools, fmt.parser))
        tools = None
    return messages, tools


def _instructions(tools: list[dict], parser: str | None) -> str:
    listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return (_LLAMA3_JSON if parser == "llama3_json" else _HERMES).format(tools=listed)


def _with_system_text(messages: list[dict], text: str) -> list[dict]:
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0], content=f"{messages[0].get('content') or ''}\n\n{text}".lstrip())
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def _as_text(message: dict, parser: str | None) -> dict:
    """An assistant message's tool_calls, or a tool result, written as the text the model would see."""
    if message.get("role") == "tool":
        return {"role": "user", "content": f"<tool_response>\n{message.get('content') or ''}\n</tool_response>"}
    calls = message.get("tool_calls")
    if message.get("role") != "assistant" or not calls:
        return message
    written = [_call_text(call, parser) for call in calls]
    text = "\n".join(filter(None, [message.get("content") or "", *written]))
    return {k: v for k, v in message.items() if k != "tool_calls"} | {"content": text}


def _call_text(call: dict, parser: str | None) -> str:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    try:
        arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        pass  # written as sent: the model sees what the client says it called
    if parser == "llama3_json":
        return json.dumps({"name": function.get("name"), "parameters": arguments}, ensure_ascii=False)
    body = json.dumps({"name": function.get("name"), "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"
