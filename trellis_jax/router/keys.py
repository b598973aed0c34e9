"""The routing key of a request: its tenant namespace and the prompt as the servers would see it.

`KeyMaker(tokenizer)` keys prompts by token ids from the servers' own tokenizer and chat template (the
same ids the server's radix cache is keyed by); without a tokenizer (`KeyMaker(None)`) it keys them by
characters: a chat becomes its messages' roles and text in order, tools first, which is a prefix of the
next turn's chat just as the rendered template is. `unit` says which ("tokens" or "chars").

Namespace: the servers give every API key its own cache, and split it again by `cache_salt`; the router
does not know the servers' keys, so it uses a hash of the bearer token itself (one namespace per key,
the same partition the servers make) and a hash of the salt. Keys and salts are never stored.

A body the router cannot read (not JSON, no prompt) gets an empty key: it is still forwarded, and the
worker answers it (usually with a 400), so clients see the server's own errors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple


class RouteKey(NamedTuple):
    namespace: str
    elements: Sequence[Hashable]  # token ids, or characters


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def namespace_of(authorization: str | None, cache_salt: Any) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    tenant = _digest(token.strip()) if scheme.lower() == "bearer" and token.strip() else ""
    if isinstance(cache_salt, str) and cache_salt:
        return f"{tenant}/salt:{_digest(cache_salt)}"
    return tenant


class KeyMaker:
    def __init__(self, tokenizer=None):
        self.tokenizer = tokenizer
        self.unit = "tokens" if tokenizer is not None else "chars"

    def key(self, path: str, body: bytes, authorization: str | None) -> RouteKey:
        try:
            request = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return RouteKey("", ())
        if not isinstance(request, dict):
            return RouteKey("", ())
        namespace = namespace_of(authorization, request.get("cache_salt"))
        try:
            if path.endswith("/chat/completions"):
                return RouteKey(namespace, self._chat(request.get("messages"), request.get("tools")))
            return RouteKey(namespace, self._prompt(request.get("prompt")))
        except (ValueError, KeyError, TypeError):  # a prompt the tokenizer or template refuses: the worker will say why
            return RouteKey(namespace, ())

    def _prompt(self, prompt: Any) -> Sequence[Hashable]:
        """The first prompt of a completion request (a batch of prompts goes to one worker)."""
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt, parse_special=True) if self.tokenizer is not None else prompt
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return prompt
        return ()

    def _chat(self, messages: Any, tools: Any) -> Sequence[Hashable]:
        if not isinstance(messages, list):
            return ()
        rendered = [_for_template(m) for m in messages if isinstance(m, dict)]
        if self.tokenizer is not None:
            extras = {"tools": tools} if tools else {}
            return self.tokenizer.encode_chat(rendered, add_generation_prompt=True, **extras)
        head = json.dumps(tools, sort_keys=True) if tools else ""
        return head + "".join(f"\x1e{m.get('role', '')}\x1f{m.get('content') or ''}" for m in rendered)


def _for_template(message: dict) -> dict:
    """As the server renders a message: text content parts joined into one string."""
    content = message.get("content")
    if isinstance(content, list):
        text = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return {**message, "content": text}
    return message
