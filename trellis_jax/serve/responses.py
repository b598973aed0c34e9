"""OpenAI response JSON: completions and chat, whole or as stream chunks, usage and logprobs.

`usage` always carries `prompt_tokens_details.cached_tokens` (prompt tokens served from the prefix
cache, the OpenAI field) and, as extensions, `prefill_flops_saved` and `kv_bytes_reread` from the
model's cost formulas, so a client sees what the cache did for its request.

`system_fingerprint` identifies the serving configuration (`fingerprint`): stable across restarts of
the same model, engine version and dtype, different when any of them changes.
"""

from __future__ import annotations

import hashlib

from trellis_jax.serve.costs import CostModel


def fingerprint(model: str, engine_version: str, dtype: str | None) -> str:
    """OpenAI-style `fp_<hex>` from what decides the outputs: the model, the engine version, the dtype."""
    digest = hashlib.sha256(f"{model}\0{engine_version}\0{dtype}".encode()).hexdigest()
    return f"fp_{digest[:12]}"


def usage(groups: list[tuple[int, int]], completion_tokens: int, cost: CostModel) -> dict:
    """`groups`: (prompt tokens, cached tokens) per prompt of the request."""
    prompt_tokens = sum(p for p, _ in groups)
    cached = sum(c for _, c in groups)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
        "prefill_flops_saved": sum(cost.flops_saved(c) for _, c in groups),
        "kv_bytes_reread": sum(cost.kv_bytes_reread(c) for _, c in groups),
    }


class LogprobFormatter:
    """Token logprobs in the completions shape (tokens / token_logprobs / top_logprobs / text_offset) or
    the chat shape (content: [{token, logprob, bytes, top_logprobs}])."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> list[int]:
        raw = getattr(self.tokenizer, "token_bytes", None)
        data = raw(token_id) if raw is not None else self.token_text(token_id).encode()
        return list(data)

    def completions(self, logprobs, text_offset: int = 0) -> dict:
        tokens, values, tops, offsets = [], [], [], []
        offset = text_offset
        for entry in logprobs:
            text = self.token_text(entry.token_id)
            tokens.append(text)
            values.append(entry.logprob)
            tops.append({self.token_text(t): lp for t, lp in entry.top_logprobs})
            offsets.append(offset)
            offset += len(text)
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}

    def chat(self, logprobs) -> dict:
        return {"content": [self._chat_entry(e.token_id, e.logprob, e.top_logprobs) for e in logprobs], "refusal": None}

    def _chat_entry(self, token_id: int, logprob: float, top) -> dict:
        entry = {"token": self.token_text(token_id), "logprob": logprob, "bytes": self.token_bytes(token_id)}
        if top is not None:
            entry["top_logprobs"] = [
                {"token": self.token_text(t), "logprob": lp, "bytes": self.token_bytes(t)} for t, lp in top
            ]
        return entry


def _envelope(kind, request_id, model, created, choices, usage_dict, system_fingerprint) -> dict:
    """The fields every completion and chat response (or stream chunk) carries around its choices."""
    return {
        "id": request_id,
        "object": kind,
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage_dict,
        "system_fingerprint": system_fingerprint,
    }


def completion_body(request_id, model, created, choices, usage_dict, system_fingerprint=None) -> dict:
    return _envelope("text_completion", request_id, model, created, choices, usage_dict, system_fingerprint)


def chat_body(request_id, model, created, choices, usage_dict, system_fingerprint=None) -> dict:
    return _envelope("chat.completion", request_id, model, created, choices, usage_dict, system_fingerprint)


def completion_chunk(request_id, model, created, choices, usage_dict=None, system_fingerprint=None) -> dict:
    return _envelope("text_completion", request_id, model, created, choices, usage_dict, system_fingerprint)


def chat_chunk(request_id, model, created, choices, usage_dict=None, system_fingerprint=None) -> dict:
    return _envelope("chat.completion.chunk", request_id, model, created, choices, usage_dict, system_fingerprint)
