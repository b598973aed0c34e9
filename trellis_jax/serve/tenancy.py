"""API keys, admin keys and per-tenant cache namespaces.

Keys are compared with `hmac.compare_digest` against every configured key (no early exit), so timing
reveals neither which key matched nor how much of a guess was right. With several keys, each key is
its own tenant: its requests use a namespace derived from the key's kind and position ("key0", "admin0"),
so tenants never match each other's prefixes. A request's `cache_salt` further splits its tenant's
namespace into one nested under it ("<tenant>/salt:<hash>"; the salt itself is never stored).

An admin key is a tenant like any other and may also act on every tenant at once (flush the whole
cache). No key configured (a single-user local server): one tenant, the empty namespace, with admin
rights, so such a server behaves as before keys existed.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import NamedTuple

from trellis_jax.serve.errors import APIError


class Caller(NamedTuple):
    namespace: str  # the tenant's cache namespace
    is_admin: bool  # may act on every tenant (an admin key, or a server without keys)


_LOCAL_USER = Caller("", True)


class Tenancy:
    def __init__(self, api_keys: list[str] | tuple[str, ...] = (), admin_keys: list[str] | tuple[str, ...] = ()):
        keys = [k for k in api_keys if k]
        admins = [k for k in admin_keys if k]
        if len(set(keys + admins)) != len(keys) + len(admins):
            raise ValueError("the same API key was given twice (keys must be distinct across api and admin keys)")
        per_key = len(keys) + len(admins) > 1
        self._keys = [(k.encode(), Caller(f"key{i}" if per_key else "", False)) for i, k in enumerate(keys)] + [
            (k.encode(), Caller(f"admin{i}" if per_key else "", True)) for i, k in enumerate(admins)
        ]

    @property
    def auth_required(self) -> bool:
        return bool(self._keys)

    @property
    def has_admins(self) -> bool:
        return any(caller.is_admin for _, caller in self._keys)

    def authenticate_operator(self, authorization: str | None) -> Caller:
        """As `authenticate`, for figures that span every tenant: once admin keys exist, only they may see
        them (APIError 403 for a tenant's key); without admin keys, any key."""
        caller = self.authenticate(authorization)
        if self.has_admins and not caller.is_admin:
            raise APIError(
                403, "this route shows every tenant's traffic: it needs an admin key", code="admin_key_required"
            )
        return caller

    def authenticate(self, authorization: str | None) -> Caller:
        """Who sends this Authorization header (namespace, admin rights), or APIError 401."""
        if not self._keys:
            return _LOCAL_USER
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
        presented = token.strip().encode()
        matched = None
        for key, caller in self._keys:  # always compare against every key
            if hmac.compare_digest(presented, key):
                matched = caller
        if matched is None:
            raise APIError(401, "invalid API key", code="invalid_api_key")
        return matched

    @staticmethod
    def namespace(tenant: str, cache_salt: str | None) -> str:
        if not cache_salt:
            return tenant
        digest = hashlib.sha256(cache_salt.encode()).hexdigest()[:32]
        return f"{tenant}/salt:{digest}"
