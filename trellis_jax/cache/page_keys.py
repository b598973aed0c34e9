"""Chained page keys without numpy: the same bytes as ``trellis_jax.kvstore.api.chain_key``.

The cache may import the standard library only, so it hashes here what the store contract defines there
(a blake2b digest of the parent key, the page's tokens as little-endian int64, and the namespace);
tests/cache/test_cache_tiers.py checks that the two agree.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

PAGE_KEY_BYTES = 16
_ROOT = b"\0" * PAGE_KEY_BYTES


def chain_key(parent: bytes | None, tokens: Sequence[int], namespace: str) -> bytes:
    """The key of the page holding `tokens` after the page keyed `parent` (None: a prompt's first page)."""
    digest = hashlib.blake2b(digest_size=PAGE_KEY_BYTES)
    digest.update(parent if parent is not None else _ROOT)
    digest.update(struct.pack(f"<{len(tokens)}q", *tokens))
    digest.update(namespace.encode("utf-8"))
    return digest.digest()
