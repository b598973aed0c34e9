"""Which tool-call format a served model writes, chosen once at start-up (`--tool-call-parser`).

`auto` reads the chat template: one that writes `<tool_call>` is Hermes/Qwen; one that knows
`<|python_tag|>` or the `ipython` role is Llama 3.1 JSON; one that never mentions `tools` (SmolLM2's, for
instance) gets its tools from `tool_prompt.py`, which asks for the Hermes format. Any other template
renders tools in a format we cannot read: the format is then unknown, and a request that wants calls
parsed is a 400 saying to start the server with `--tool-call-parser`.

Where the vocabulary makes `<tool_call>` a special token, a detokenizer that skips special tokens would
drop the tags the parser looks for: such a format asks for them to be kept (`keep_special_tokens`; stop
tokens are never detokenized either way).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from trellis_jax.serve.tool_calls.calls import Extractor
from trellis_jax.serve.tool_calls.hermes import HermesExtractor
from trellis_jax.serve.tool_calls.llama3_json import Llama3JsonExtractor

EXTRACTORS = {"hermes": HermesExtractor, "llama3_json": Llama3JsonExtractor}
PARSER_CHOICES = ("auto", *EXTRACTORS)


@dataclass(frozen=True)
class ToolFormat:
    parser: str | None  # a key of EXTRACTORS; None: unknown (requests that want calls parsed get a 400)
    template_renders_tools: bool  # False: tool_prompt.py writes the tools into the system message
    template_renders_calls: bool  # False: tool_prompt.py writes past calls and results as text
    keep_special_tokens: bool = False  # the parser's tags are special tokens: detokenize them

    def extractor(self) -> Extractor:
        return EXTRACTORS[self.parser]()


def tool_format(flag: str, template_source: str | None, special_tokens: Collection[str] = ()) -> ToolFormat:
    """The format for `--tool-call-parser flag`, the chat template in use (None: the model has none) and
    the vocabulary's special-token strings."""
    if flag not in PARSER_CHOICES:
        raise ValueError(f"tool-call parser must be one of {', '.join(PARSER_CHOICES)}, got {flag!r}")
    source = template_source or ""
    renders_tools = "tools" in source
    renders_calls = "tool_calls" in source
    parser = flag if flag != "auto" else _parser_of(source, renders_tools)
    keep = parser == "hermes" and ("<tool_call>" in special_tokens or "</tool_call>" in special_tokens)
    return ToolFormat(parser, renders_tools, renders_calls, keep)


def _parser_of(source: str, renders_tools: bool) -> str | None:
    if "<tool_call>" in source:
        return "hermes"
    if "<|python_tag|>" in source or "ipython" in source:
        return "llama3_json"
    return None if renders_tools else "hermes"
