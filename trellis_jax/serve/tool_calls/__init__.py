"""Tool calls for /v1/chat/completions: the request's `tools` / `tool_choice` checked (`schema.py`,
`choice.py`), tools written into the prompt where the chat template does not render them
(`tool_prompt.py`), and the calls the model writes parsed out of its reply in the served model's format
(`formats.py`: `hermes.py`, `llama3_json.py`) into `message.tool_calls` or streamed deltas (`stream.py`).

Imports: the serve errors and pydantic; llguidance lazily (to check a forced-call grammar compiles); the
engine's `StructuredOutput` lazily. Nothing here touches the engine's state.
"""

from trellis_jax.serve.tool_calls.choice import ToolPlan, constrained, plan_tools
from trellis_jax.serve.tool_calls.formats import PARSER_CHOICES, ToolFormat, tool_format
from trellis_jax.serve.tool_calls.schema import ToolChoice, ToolSpec, tools_for_template
from trellis_jax.serve.tool_calls.stream import ChoiceStream, message

__all__ = [
    "PARSER_CHOICES",
    "ChoiceStream",
    "ToolChoice",
    "ToolFormat",
    "ToolPlan",
    "ToolSpec",
    "constrained",
    "message",
    "plan_tools",
    "tool_format",
    "tools_for_template",
]
