"""API keys and per-tenant cache namespaces.

Keys are compared with `hmac.compare_digest` against every configured key (no early exit), so timing
reveals neither which key matched nor how much of a guess was right. With several keys, each key is
its own tenant: its requests use a namespace derived from the key's position, so tenants never match
each other's prefixes. A request's `cache_salt` further splits its tenant's namespace (hashed: the
salt itself is never stored). No key configured: one shared tenant, the empty namespace.
"""

from __future__ import annotations

import hashlib
import hmac

from trellis_jax.serve.errors import APIError


class Tenancy:
    def __init__(self, api_keys: list[str] | tuple[str, ...] = ()):
        keys = [k for k in api_keys if k]
        if len(set(keys)) != len(keys):
            raise ValueError("the same API key was given twice")
        self._keys = [k.encode() for k in keys]
        self._per_key_namespaces = len(keys) > 1

    @property
    def auth_required(self) -> bool:
        return bool(self._keys)

    def authenticate(self, authorization: str | None) -> str:
        """The tenant's namespace for this Authorization header, or APIError 401."""
        if not self._keys:
            return ""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
        presented = token.strip().encode()
        matched = -1
        for index, key in enumerate(self._keys):  # always compare against every key
            if hmac.compare_digest(presented, key):
                matched = index
        if matched < 0:
            raise APIError(401, "invalid API key", code="invalid_api_key")
        return f"key{matched}" if self._per_key_namespaces else ""

    @staticmethod
    def namespace(tenant: str, cache_salt: str | None) -> str:
        if not cache_salt:
            return tenant
        digest = hashlib.sha256(cache_salt.encode()).hexdigest()[:32]
        return f"{tenant}/salt:{digest}"
