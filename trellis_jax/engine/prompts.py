"""Prompt forms the engine accepts, and their token ids.

A prompt is one of: a str (raw text; special tokens in it are parsed as the model's), a list of token
ids (each in [0, the tokenizer's vocab_size): field_ranges.check_token_ids), or a chat (a list of
{"role", "content"} messages, rendered with the model's chat template plus the generation prompt;
special-token text in the messages is tokenized as plain text unless the engine option
allow_special_tokens_in_content is on, see Tokenizer.encode_chat). `split_prompts` tells one prompt from
a list of prompts for `LLM.generate`.
"""

from __future__ import annotations

from trellis_jax.field_ranges import check_token_ids

Prompt = str | list[int] | list[dict]


def is_chat(prompt) -> bool:
    return isinstance(prompt, list) and bool(prompt) and all(isinstance(m, dict) for m in prompt)


def is_token_ids(prompt) -> bool:
    return (
        isinstance(prompt, list)
        and bool(prompt)
        and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
    )


def to_token_ids(prompt: Prompt, tokenizer) -> list[int]:
    if isinstance(prompt, str):
        if not prompt:
            raise ValueError("empty prompt")
        return list(tokenizer.encode(prompt, parse_special=True))
    if is_token_ids(prompt):
        return check_token_ids(prompt, tokenizer.vocab_size)
    if is_chat(prompt):
        for message in prompt:
            if "role" not in message or "content" not in message:
                raise ValueError(f"a chat message needs 'role' and 'content', got {message!r}")
        return list(tokenizer.encode_chat(prompt, add_generation_prompt=True, add_bos=None))
    raise ValueError(f"a prompt is a str, a list of token ids or a list of chat messages; got {prompt!r:.200}")


def split_prompts(prompts) -> list[Prompt]:
    """One prompt -> [prompt]; a list of prompts -> itself."""
    if isinstance(prompts, str) or is_token_ids(prompts) or is_chat(prompts):
        return [prompts]
    if isinstance(prompts, (list, tuple)):
        return list(prompts)
    raise ValueError(f"prompts must be a prompt or a list of prompts, got {type(prompts).__name__}")
