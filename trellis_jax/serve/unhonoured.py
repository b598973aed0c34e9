"""Request fields we would otherwise drop without a word: accepted means honoured, the rest is a 400.

Contract: `refuse_unhonoured(body)` raises APIError(400, param=<field>) for the first field of a
completion or chat body (pydantic's `model_extra`: what the request models do not declare) that this
server does not honour. Three kinds:
  - fields with no effect on the output, accepted as OpenAI accepts them (NO_EFFECT: tagging, routing
    hints, the default service tier, `store: false`, text-only modalities);
  - known OpenAI / vLLM fields we do not implement (REFUSED), each with what to send instead;
  - anything else: OpenAI's own answer to an unknown argument ("Unrecognized request argument
    supplied"), so a typo (`max_token`, `temprature`) is a 400 instead of a silently different reply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trellis_jax.serve.errors import APIError

# field -> whether a value has no effect on the reply (so accepting it honours it)
NO_EFFECT: dict[str, Callable[[Any], bool]] = {
    "metadata": lambda v: True,  # tags for OpenAI's stored completions; nothing is stored here
    "prompt_cache_key": lambda v: True,  # a routing hint; the radix cache matches prefixes on its own
    "safety_identifier": lambda v: True,  # like `user`: an end-user id for abuse monitoring
    "service_tier": lambda v: v in (None, "auto", "default"),
    "store": lambda v: v in (None, False),
    "modalities": lambda v: v in (None, ["text"]),
}

REFUSED: dict[str, str] = {
    "functions": "the deprecated functions / function_call fields are not supported; send tools and tool_choice",
    "function_call": "the deprecated functions / function_call fields are not supported; send tools and tool_choice",
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "reasoning_effort": "this server's models have no reasoning mode",
    "verbosity": "verbosity is not supported; bound the reply with max_tokens",
    "guided_grammar": "vLLM's EBNF grammars are not supported; send response_format, guided_json, guided_regex "
    "or guided_choice",
    "structured_outputs": "send response_format, guided_json, guided_regex or guided_choice",
    "guided_decoding_backend": "the grammar backend is llguidance and cannot be chosen per request",
    "guided_whitespace_pattern": "the JSON whitespace of structured outputs is fixed (no free whitespace)",
    "use_beam_search": "beam search is not supported",
    "length_penalty": "length_penalty applies to beam search, which is not supported",
    "min_tokens": "min_tokens is not supported",
    "bad_words": "bad_words is not supported; ban tokens with logit_bias -100",
    "allowed_token_ids": "allowed_token_ids is not supported; send a guided_regex or guided_choice",
    "prompt_logprobs": "prompt logprobs are not computed",
    "truncate_prompt_tokens": "prompts are never truncated; shorten the prompt",
    "include_stop_str_in_output": "stop strings are never included in the output",
    "logits_processors": "custom logits processors are not supported",
}


def refuse_unhonoured(body) -> None:
    for field, value in (body.model_extra or {}).items():
        accepts = NO_EFFECT.get(field)
        if accepts is not None:
            if accepts(value):
                continue
            raise APIError(400, f"{field}={value!r} is not supported by this server", param=field)
        if field in REFUSED:
            raise APIError(400, f"{field}: {REFUSED[field]}", param=field)
        raise APIError(400, f"Unrecognized request argument supplied: {field}", param=field)
