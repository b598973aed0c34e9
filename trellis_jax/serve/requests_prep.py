"""Turn validated request bodies into engine work: token ids per prompt, SamplingParams capped by the
context, the tenant namespace. Every problem a client can fix is an APIError 400 saying what to fix,
text that is not valid Unicode (a lone surrogate such as "\\ud800", in any field) included.

String prompts of /v1/completions are raw text: special-token text in them (`<|im_start|>`) is parsed as
the model's control tokens, as documented. Chat messages are tokenized as text (only the template's markup
yields special tokens) unless the server runs with --allow-special-tokens-in-content."""

from __future__ import annotations

import json
import re

from trellis_jax.engine.sampling_params import KNOB_KEYS, SamplingParams
from trellis_jax.engine.structured import StructuredOutput
from trellis_jax.field_ranges import FieldRangeError, check_field, check_token_ids
from trellis_jax.serve.errors import APIError
from trellis_jax.serve.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    SamplingFields,
)
from trellis_jax.serve.tool_calls import ToolFormat, tool_prompt, tools_for_template
from trellis_jax.tokenizer.valid_text import find_invalid_text

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # the OpenAI default for /v1/completions; chat defaults to the context left
MAX_CHOICES = 64  # prompts x n in one request: more is a batch job, not an API call


def check_text_fields(req: SamplingFields) -> None:
    """A 400 naming the first field (prompt, messages, stop, tools, ...) whose text is not valid Unicode."""
    invalid = find_invalid_text(req.model_dump(exclude_none=True))
    if invalid is not None:
        path, problem = invalid
        raise APIError(400, f"{path} {problem}", param=path, code="invalid_text")


def completion_prompts(req: CompletionRequest, tokenizer) -> list[list[int]]:
    check_text_fields(req)
    count = len(req.prompts())
    if count * req.n > MAX_CHOICES:
        raise APIError(
            400,
            f"{count} prompts x n={req.n} asks for {count * req.n} completions; at most {MAX_CHOICES} "
            "per request (split it into several requests)",
            param="prompt",
        )
    prompts = []
    for i, prompt in enumerate(req.prompts()):
        if isinstance(prompt, str):
            prompts.append(list(tokenizer.encode(prompt, parse_special=True)))
        else:
            try:
                prompts.append(check_token_ids(prompt, tokenizer.vocab_size, name=f"prompt[{i}]"))
            except FieldRangeError as error:
                raise APIError(400, str(error), param="prompt") from error
        if not prompts[-1]:
            raise APIError(400, f"prompt {i} is empty after tokenization", param="prompt")
    return prompts


def echo_texts(req: CompletionRequest, prompts: list[list[int]], tokenizer) -> list[str]:
    """What `echo` prepends to each prompt's choices: a string prompt as sent, token ids decoded."""
    return [
        p if isinstance(p, str) else tokenizer.decode(ids, skip_special_tokens=False)
        for p, ids in zip(req.prompts(), prompts, strict=True)
    ]


def chat_prompt(req: ChatCompletionRequest, tokenizer, tool_format: ToolFormat | None = None) -> list[int]:
    check_text_fields(req)
    return encode_messages(
        req.messages,
        tokenizer,
        add_generation_prompt=req.add_generation_prompt,
        template_kwargs=req.chat_template_kwargs,
        tools=tools_for_template(req.tools),
        tool_format=tool_format,
    )


def encode_messages(
    messages,
    tokenizer,
    *,
    add_generation_prompt: bool,
    template_kwargs: dict | None = None,
    tools: list | None = None,
    add_bos: bool | None = None,
    tool_format: ToolFormat | None = None,
) -> list[int]:
    """The chat's token ids through the model's template (a 400 naming `messages` if it cannot render).
    With `tool_format`, tools and past calls the template does not render are written in as text."""
    rendered = [m.for_template() for m in messages]
    if tool_format is not None:
        rendered, tools = tool_prompt.prepare(rendered, tools, tool_format)
    extras = dict(template_kwargs or {})
    if tools:
        extras["tools"] = tools
    try:
        ids = list(
            tokenizer.encode_chat(
                rendered,
                add_generation_prompt=add_generation_prompt,
                add_bos=add_bos,
                **extras,
            )
        )
    except (ValueError, KeyError, TypeError) as error:  # ChatTemplateError and TokenizerError are ValueErrors
        raise APIError(400, f"cannot build the chat prompt: {error}", param="messages") from error
    if not ids:
        raise APIError(400, "the chat renders to an empty prompt", param="messages")
    return ids


def sampling_params(
    req: SamplingFields,
    prompts: list[list[int]],
    max_model_len: int,
    *,
    requested_max: int | None,
    default_max: int | None,
    logprobs: int | None,
    vocab_size: int | None = None,
) -> SamplingParams:
    """SamplingParams for the request; max_tokens is capped so prompt + output fit the context. Every number
    is checked against field_ranges.FIELD_RANGES (max_tokens before the cap): a 400 naming the field.
    logit_bias ids must be below `vocab_size`; response_format (or a guided_* extra) must compile."""
    if requested_max is not None:
        _checked(lambda: check_field("max_tokens", requested_max))
    longest = max(len(p) for p in prompts)
    if longest >= max_model_len:
        raise APIError(
            400,
            f"the prompt has {longest} tokens but this model's context is {max_model_len} tokens "
            "(prompt + completion); shorten the prompt",
            param="messages" if hasattr(req, "messages") else "prompt",
            code="context_length_exceeded",
        )
    room = max_model_len - longest
    wanted = requested_max if requested_max is not None else default_max
    max_tokens = room if wanted is None else min(wanted, room)
    fields = {
        "n": req.n,
        "max_tokens": max_tokens,
        "logprobs": logprobs,
        "seed": req.seed,
        "stop": req.stop or (),
        "stop_token_ids": req.stop_token_ids or (),
        "logit_bias": _logit_bias(req.logit_bias, vocab_size),
        "structured_output": structured_output(req),
    }
    for name in (*KNOB_KEYS, "ignore_eos", "skip_special_tokens"):
        value = getattr(req, name)
        if value is not None:
            fields[name] = value
    return _checked(lambda: SamplingParams(**fields))


def _logit_bias(bias: dict | None, vocab_size: int | None) -> dict[int, float]:
    pairs = {int(token): value for token, value in (bias or {}).items()}
    outside = [token for token in pairs if vocab_size is not None and token >= vocab_size]
    if outside:
        raise APIError(
            400, f"logit_bias token id {outside[0]} is outside the vocabulary (size {vocab_size})", param="logit_bias"
        )
    return pairs


GUIDED_FIELDS = ("response_format", "guided_json", "guided_regex", "guided_choice")


def structured_output(req: SamplingFields) -> StructuredOutput | None:
    """The request's output constraint, compiled once here so an unsupported construct is a 400 naming it."""
    given = [name for name in GUIDED_FIELDS if getattr(req, name) is not None]
    if req.response_format is not None and req.response_format.get("type") == "text":
        given.remove("response_format")  # plain text: no constraint, and no conflict with a guided_* extra
    if len(given) > 1:
        raise APIError(400, f"give at most one of {', '.join(given)}", param=given[1])
    if not given:
        return None
    field = given[0]
    try:
        structured = _structured(field, getattr(req, field))
        structured.validate()
    except ValueError as error:
        raise APIError(400, f"{field}: {error}", param=field) from error
    return structured


def _structured(field: str, value) -> StructuredOutput:
    if field == "response_format":
        return StructuredOutput.from_response_format(value)
    if field == "guided_json":
        return StructuredOutput("json_schema", value if isinstance(value, str) else json.dumps(value))
    if field == "guided_regex":
        return StructuredOutput("regex", value)
    return StructuredOutput("regex", "|".join(re.escape(choice) for choice in value))  # guided_choice


def _checked(build):
    """build(), with a ValueError turned into a 400 (naming the field where FIELD_RANGES rejected one)."""
    try:
        return build()
    except ValueError as error:
        raise APIError(400, getattr(error, "detail", str(error)), param=getattr(error, "field", None)) from error
