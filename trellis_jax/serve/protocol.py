"""Request bodies of the OpenAI API we serve, as pydantic models (validation = the 400 messages).

Types are strict where a wrong type would be silently coerced into something else (a string for a
number). Completion and chat bodies keep fields they do not declare (`extra="allow"`) so that
unhonoured.py can answer each with a 400 (or accept it where it has no effect on the reply): nothing a
client sends is silently dropped.
Ranges follow the OpenAI reference; extras: top_k, min_p, repetition_penalty, cache_salt, ignore_eos,
stop_token_ids, skip_special_tokens, and vLLM's guided_json / guided_regex / guided_choice. response_format
and those are checked (compiled) by requests_prep.structured_output: an unsupported construct is a 400. What the step can carry (ints past int32, floats past float32) is
checked once, by SamplingParams against trellis_jax/field_ranges.py (requests_prep turns it into a 400).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from trellis_jax.field_ranges import MAX_LOGIT_BIAS, MAX_LOGPROBS  # one bound for the server and the engine
from trellis_jax.serve.tool_calls.schema import ToolChoice, ToolSpec

MAX_N = 16
MAX_STOP_STRINGS = 16

Number = StrictFloat | StrictInt


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class SamplingFields(BaseModel):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model_config = ConfigDict(extra="allow")  # undeclared fields: unhonoured.refuse_unhonoured

    model: StrictStr
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    top_p: Annotated[Number, Field(gt=0, le=1)] | None = None
    n: Annotated[StrictInt, Field(ge=1, le=MAX_N)] = 1
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=MAX_STOP_STRINGS)] | None = None
    seed: StrictInt | None = None
    presence_penalty: Annotated[Number, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[Number, Field(ge=-2, le=2)] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None
    # extras (vLLM-style)
    top_k: Annotated[StrictInt, Field(ge=-1)] | None = None
    min_p: Annotated[Number, Field(ge=0, le=1)] | None = None
    repetition_penalty: Annotated[Number, Field(gt=0, le=10)] | None = None
    ignore_eos: StrictBool | None = None
    stop_token_ids: list[Annotated[StrictInt, Field(ge=0)]] | None = None
    skip_special_tokens: StrictBool | None = None
    cache_salt: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None
    logit_bias: Annotated[dict[StrictStr, Number], Field(max_length=MAX_LOGIT_BIAS)] | None = None
    response_format: dict[str, Any] | None = None
    # extras (vLLM-style guided decoding): at most one of these and response_format
    guided_json: dict[str, Any] | StrictStr | None = None
    guided_regex: Annotated[StrictStr, Field(min_length=1)] | None = None
    guided_choice: Annotated[list[Annotated[StrictStr, Field(min_length=1)]], Field(min_length=1)] | None = None

    @field_validator("stop")
    @classmethod
    def _non_empty_stop(cls, stop):
        values = [stop] if isinstance(stop, str) else stop or []
        if any(not s for s in values):
            raise ValueError("stop strings must be non-empty")
        return stop

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias_keys(cls, bias):
        for key in bias or {}:
            if not key.isdigit():
                raise ValueError(f"logit_bias keys must be token ids (decimal strings), got {key!r}")
        return bias

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


PromptIds = Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(min_length=1)]


class CompletionRequest(SamplingFields):
    prompt: (
        Annotated[StrictStr, Field(min_length=1)]
        | PromptIds
        | Annotated[list[Annotated[StrictStr, Field(min_length=1)]], Field(min_length=1)]
        | Annotated[list[PromptIds], Field(min_length=1)]
    )
    logprobs: Annotated[StrictInt, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    echo: StrictBool = False
    best_of: StrictInt | None = None
    suffix: StrictStr | None = None

    @field_validator("best_of")
    @classmethod
    def _best_of(cls, best_of, info):
        if best_of is not None and best_of != info.data.get("n", 1):
            raise ValueError("best_of other than n is not supported; leave it out")
        return best_of

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, suffix):
        if suffix:
            raise ValueError("suffix (insertion) is not supported; leave it out")
        return suffix

    @field_validator("echo")
    @classmethod
    def _echo_without_logprobs(cls, echo, info):
        if echo and info.data.get("logprobs") is not None:
            raise ValueError(
                "echo with logprobs is not supported (the prompt's logprobs are not computed); drop one of them"
            )
        return echo

    def prompts(self) -> list[str | list[int]]:
        """The prompt(s) as a list: one string or id list per completion group."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and isinstance(p[0], int):
            return [p]
        return list(p)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, tool_call_id... go to the template as given
    role: Annotated[StrictStr, Field(min_length=1)]
    content: StrictStr | list[TextPart] | None = None

    def for_template(self) -> dict[str, Any]:
        message = self.model_dump(exclude_none=True)
        if isinstance(self.content, list):  # the templates we render expect a string
            message["content"] = "".join(part.text for part in self.content)
        elif self.content is None and not message.get("tool_calls"):
            message["content"] = ""
        return message


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    logprobs: StrictBool = False
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    add_generation_prompt: StrictBool = True
    tools: list[ToolSpec] | None = None
    tool_choice: ToolChoice | None = None  # checked against tools in tool_calls/choice.py
    parallel_tool_calls: StrictBool = True  # False: at most one call per reply
    chat_template_kwargs: dict[str, Any] | None = None

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_needs_logprobs(cls, top, info):
        if top and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return top


class TokenizeRequest(BaseModel):
    """POST /tokenize (vLLM's shape): exactly one of `prompt` (raw text, as /v1/completions reads it) and
    `messages` (through the chat template, as /v1/chat/completions renders it)."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = None
    prompt: StrictStr | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    add_special_tokens: StrictBool = True  # False: no BOS beyond what the text or template holds
    add_generation_prompt: StrictBool = True
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[ToolSpec] | None = None

    @model_validator(mode="after")
    def _one_input(self):
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of prompt and messages")
        return self


class DetokenizeRequest(BaseModel):
    """POST /detokenize (vLLM's shape): token ids -> {"prompt": text}."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = None
    tokens: list[Annotated[StrictInt, Field(ge=0)]]
