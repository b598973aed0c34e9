"""Chat templates rendered with Hugging Face semantics.

Same environment as `transformers` (`render_jinja_template`): an immutable sandbox with
`trim_blocks=True, lstrip_blocks=True`, the `loopcontrols` extension, a `{% generation %}` block that
renders its body, the `tojson` filter that keeps non-ASCII text (`ensure_ascii=False`), and the globals
`raise_exception(msg)` and `strftime_now(fmt)`. Templates see `messages`, `add_generation_prompt`,
`tools`, `documents`, the special-token strings (`bos_token`, `eos_token`, ...) and any extra keyword.
Every failure (no template, malformed messages, template errors) raises `ChatTemplateError`.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import ChatTemplateError


class _GenerationBlock(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for HF's masks; rendering keeps the body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def validate_messages(messages: Any) -> list[Mapping[str, Any]]:
    """Check the OpenAI/HF message shape: a list of mappings with a string `role` and a `content` that is
    a string, a list of parts, or null (only alongside `tool_calls`)."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ChatTemplateError(
            f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ChatTemplateError(
                f"messages[{i}] must be a dict with 'role' and 'content', got {type(message).__name__}"
            )
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise ChatTemplateError(f"messages[{i}] has no 'role' (a non-empty string such as 'user')")
        if "content" not in message and "tool_calls" not in message:
            raise ChatTemplateError(f"messages[{i}] (role {role!r}) has no 'content'")
        content = message.get("content")
        if content is None and not message.get("tool_calls"):
            raise ChatTemplateError(f"messages[{i}] (role {role!r}) has null 'content' and no 'tool_calls'")
        if content is not None and not isinstance(content, (str, list)):
            raise ChatTemplateError(
                f"messages[{i}] (role {role!r}): 'content' must be a string or a list of parts, got {type(content).__name__}"
            )
    return list(messages)


class ChatTemplate:
    """A compiled chat template plus the special-token strings it may reference."""

    def __init__(self, source: str, special_tokens: Mapping[str, str | None], *, origin: str = "template"):
        self.source = source
        self.special_tokens = {k: v for k, v in special_tokens.items() if v is not None}
        try:
            self._template = _environment().from_string(source)
        except jinja2.exceptions.TemplateSyntaxError as exc:
            raise ChatTemplateError(f"{origin}: chat template does not parse: {exc} (line {exc.lineno})") from exc

    def render(
        self,
        messages: Any,
        *,
        add_generation_prompt: bool = True,
        tools: list | None = None,
        documents: list | None = None,
        **kwargs: Any,
    ) -> str:
        messages = validate_messages(messages)
        context = {**self.special_tokens, **kwargs}
        try:
            return self._template.render(
                messages=messages,
                tools=tools,
                documents=documents,
                add_generation_prompt=add_generation_prompt,
                **context,
            )
        except Exception as exc:  # template code can raise anything: TemplateError, TypeError, ...
            raise ChatTemplateError(f"chat template failed: {type(exc).__name__}: {exc}") from exc
