"""The grammar that makes `tool_choice: "required"` or a named function hold: the reply can only be
calls in the served format, each naming an offered function with arguments valid for its schema.
Text in llguidance's Lark dialect (`%json{...}` embeds a JSON Schema), handed to the engine as
`StructuredOutput(kind="lark", spec=...)`.

    hermes:      start: call ("\\n" call)*      call: "<tool_call>\\n" %json{<one call>} "\\n</tool_call>"
                 (start: call, with parallel_tool_calls false)
    llama3_json: start: %json{<one call>}       ("parameters" instead of "arguments")

<one call> = {"type": "object", "properties": {"name": {"const": f}, "arguments": <f's parameters>},
"required": [...], "additionalProperties": false}, an anyOf over the functions when several may be called.
"""

from __future__ import annotations

import json

from trellis_jax.engine.structured import JSON_OPTIONS

ANY_OBJECT = {"type": "object"}


def call_schema(functions: list[tuple[str, dict | None]], arguments_key: str) -> dict:
    """JSON Schema of one call to any of `functions` ((name, parameters schema or None) pairs)."""
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": name}, arguments_key: parameters or ANY_OBJECT},
            "required": ["name", arguments_key],
            "additionalProperties": False,
        }
        for name, parameters in functions
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def lark_grammar(functions: list[tuple[str, dict | None]], parser: str, *, parallel: bool = True) -> str:
    """The Lark text for calls to `functions` in `parser`'s format ("hermes" or "llama3_json"); one call
    only unless `parallel` (Hermes)."""
    if parser == "llama3_json":
        return f"start: %json{_embedded(call_schema(functions, 'parameters'))}\n"
    schema = _embedded(call_schema(functions, "arguments"))
    calls = 'call ("\\n" call)*' if parallel else "call"
    return f'start: {calls}\ncall: "<tool_call>\\n" %json{schema} "\\n</tool_call>"\n'


def _embedded(schema: dict) -> str:
    """`schema` as %json text, with the whitespace rules response_format's schemas get (no free
    whitespace: a weak model could otherwise fill max_tokens with newlines between keys)."""
    return json.dumps({**schema, "x-guidance": JSON_OPTIONS})


def grammar_error(lark: str) -> str | None:
    """llguidance's complaint about `lark` (an unsupported schema construct, ...), or None when it compiles
    (or llguidance is not installed: the engine then refuses the grammar itself)."""
    try:
        from llguidance import LLMatcher
    except ImportError:
        return None
    is_error, messages = LLMatcher.validate_grammar_with_warnings(LLMatcher.grammar_from_lark(lark))
    return messages[0] if is_error else None
