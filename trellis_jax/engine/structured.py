"""`StructuredOutput`: what a request's output must match (a JSON schema, any JSON object, a Lark grammar, a
regex), as plain data on `SamplingParams.structured_output`.

Contract: `StructuredOutput(kind, spec)` is frozen and hashable; `spec` is the JSON schema as a JSON string
for "json_schema", the grammar text for "lark" (llguidance's Lark dialect, e.g.
`start: "<tool_call>\\n" %json{...} "\\n</tool_call>"`) and "regex", and "" for "json_object".
`validate()` compiles the grammar (no tokenizer needed) and raises ValueError naming what llguidance does
not support ("Unimplemented keys: ["uniqueItems"]"), so a server can answer 400 before the request
reaches the engine. `grammar()` is the llguidance grammar string the engine's matchers are built from.
`from_response_format(body)` maps OpenAI's `response_format` ({"type": "text" | "json_object" |
"json_schema", "json_schema": {"name", "schema", "strict"}}) onto one, or None for "text".
llguidance is imported on first use only: a request without a grammar never loads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

KINDS = ("json_object", "json_schema", "lark", "regex")
# JSON without free whitespace (a model cannot wander into endless newlines), with the separators
# json.dumps writes by default, which instruct models tend to produce anyway.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True)
class StructuredOutput:
    kind: Literal["json_object", "json_schema", "lark", "regex"]
    spec: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"structured output kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.spec, str):
            raise ValueError(f"structured output spec must be a string, got {type(self.spec).__name__}")
        if self.kind == "json_schema":
            _schema_object(self.spec)
        elif self.kind in ("lark", "regex") and not self.spec:
            raise ValueError(f"a {self.kind} structured output needs a non-empty grammar")

    def grammar(self) -> str:
        """The llguidance grammar (its JSON form) this output is constrained by."""
        from llguidance import LLMatcher

        if self.kind == "json_object":
            return LLMatcher.grammar_from_json_schema({"type": "object"}, defaults=JSON_OPTIONS)
        if self.kind == "json_schema":
            return LLMatcher.grammar_from_json_schema(self.spec, defaults=JSON_OPTIONS)
        if self.kind == "lark":
            return LLMatcher.grammar_from_lark(self.spec)
        return LLMatcher.grammar_from_regex(self.spec)

    def validate(self) -> None:
        """ValueError naming the unsupported construct or the grammar error; None when llguidance accepts it."""
        from llguidance import LLMatcher

        try:
            grammar = self.grammar()
        except ValueError as error:
            raise ValueError(f"invalid {self.kind} grammar: {error}") from error
        failed, messages = LLMatcher.validate_grammar_with_warnings(grammar, None)
        if failed:
            raise ValueError(f"unsupported {self.kind}: {messages[0].strip()}")

    @classmethod
    def from_response_format(cls, response_format: dict | None) -> StructuredOutput | None:
        """OpenAI's response_format -> a StructuredOutput (None for "text" or no field); ValueError on a bad shape."""
        if response_format is None:
            return None
        if not isinstance(response_format, dict):
            raise ValueError("response_format must be an object")
        kind = response_format.get("type")
        if kind == "text":
            return None
        if kind == "json_object":
            return cls("json_object")
        if kind != "json_schema":
            raise ValueError(f"response_format.type must be text, json_object or json_schema, got {kind!r}")
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise ValueError('response_format.json_schema must be an object with a "schema" object')
        if not isinstance(spec.get("strict", False), (bool, type(None))):
            raise ValueError("response_format.json_schema.strict must be a boolean")
        # strict or not, the schema is enforced (OpenAI only promises adherence with strict: true).
        return cls("json_schema", json.dumps(spec.get("schema", {})))


def _schema_object(spec: str) -> None:
    try:
        schema = json.loads(spec)
    except json.JSONDecodeError as error:
        raise ValueError(f"a json_schema structured output needs the schema as JSON text: {error}") from error
    if not isinstance(schema, (dict, bool)):
        raise ValueError("a JSON schema must be an object (or a boolean)")
