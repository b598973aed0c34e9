"""`tool_choice` against `tools`: what a chat request asks of tool calls, checked (a 400 naming the field
for anything we cannot honour) and turned into what the engine and the response need.

    none                  tools are rendered, calls are not parsed: the reply is content only
    auto (default)        calls the model writes are parsed out of the text
    required              a grammar lets the model write only calls (one or more) to the tools offered
    {"type": "function", "function": {"name": f}}   exactly one call, to f

required / named ride the engine's structured outputs (`SamplingParams.structured_output`, a Lark grammar);
with a response_format as well they are a 400 (the two constraints would contradict).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from trellis_jax.engine.structured import StructuredOutput
from trellis_jax.serve.errors import APIError
from trellis_jax.serve.tool_calls.calls import Extractor, FirstCallOnly
from trellis_jax.serve.tool_calls.formats import EXTRACTORS, ToolFormat
from trellis_jax.serve.tool_calls.grammar import grammar_error, lark_grammar
from trellis_jax.serve.tool_calls.schema import NamedToolChoice, ToolSpec


@dataclass(frozen=True)
class ToolPlan:
    """A request whose reply is parsed for calls; `grammar` (Lark text) when calls are forced;
    `parallel` False (`parallel_tool_calls: false`): at most one call (the grammar allows one; a free
    reply keeps its first)."""

    parser: str
    grammar: str | None = None
    parallel: bool = True
    keep_special_tokens: bool = False  # ToolFormat's: the parser's tags are special tokens

    def extractor(self) -> Extractor:
        extractor = EXTRACTORS[self.parser]()
        return extractor if self.parallel else FirstCallOnly(extractor)


def plan_tools(tools: list[ToolSpec] | None, tool_choice, fmt: ToolFormat, parallel: bool = True) -> ToolPlan | None:
    """None when the reply is content only (no tools, or tool_choice none)."""
    if tool_choice is not None and not tools:
        raise APIError(400, "tool_choice needs tools; send tools or leave tool_choice out", param="tool_choice")
    if not tools:
        return None
    _check_unique(tools)
    choice = tool_choice or "auto"
    if choice == "none":
        return None
    if fmt.parser is None:
        raise APIError(
            400,
            "this model's chat template renders tools in a format the server does not know how to parse; "
            "start the server with --tool-call-parser hermes or llama3_json (or send tool_choice 'none')",
            param="tools",
        )
    if choice == "auto":
        return ToolPlan(fmt.parser, parallel=parallel, keep_special_tokens=fmt.keep_special_tokens)
    functions = [(t.function.name, t.function.parameters) for t in tools]
    if isinstance(choice, NamedToolChoice):
        wanted = choice.function.name
        functions = [f for f in functions if f[0] == wanted]
        if not functions:
            raise APIError(400, f"tool_choice names function {wanted!r}, which is not in tools", param="tool_choice")
        parallel = False  # a named function is one call to it: a weak model would otherwise repeat it to max_tokens
    grammar = lark_grammar(functions, fmt.parser, parallel=parallel)
    problem = grammar_error(grammar)
    if problem is not None:
        raise APIError(400, f"cannot constrain the reply to these tools' parameters: {problem}", param="tools")
    return ToolPlan(fmt.parser, grammar, parallel, fmt.keep_special_tokens)


def _check_unique(tools: list[ToolSpec]) -> None:
    seen = set()
    for i, tool in enumerate(tools):
        if tool.function.name in seen:
            raise APIError(
                400, f"function name {tool.function.name!r} appears twice in tools", param=f"tools[{i}].function.name"
            )
        seen.add(tool.function.name)


def constrained(sampling, plan: ToolPlan | None, *, skip_special_tokens_given: bool = False):
    """`sampling` as the plan needs it: the grammar as its structured output, and special tokens kept in
    the text where the format's tags are special (unless the client set skip_special_tokens itself)."""
    if plan is None:
        return sampling
    if plan.keep_special_tokens and not skip_special_tokens_given:
        sampling = dataclasses.replace(sampling, skip_special_tokens=False)
    if plan.grammar is None:
        return sampling
    if sampling.structured_output is not None:
        raise APIError(
            400,
            "tool_choice 'required' or a named function constrains the output to a tool call, which a "
            "response_format (or guided_*) constraint would contradict; send one of them",
            param="tool_choice",
        )
    return dataclasses.replace(sampling, structured_output=StructuredOutput(kind="lark", spec=plan.grammar))
