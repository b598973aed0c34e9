"""The contract between the radix cache's lower tiers and the stores that hold their pages.

A page leaves the device pool (L1) for a store: host RAM (L2) or disk (L3, under `--kv-cache-dir`). A store
knows nothing of trees, requests or jax: it maps a page key to one page of KV as a numpy array and, beside
it, what a restarted process needs to put the page back into a tree (its parent key, its tokens, its
namespace).

Page keys chain: a page's key is a digest of its parent page's key, its own tokens and its namespace, so two
processes that cache the same prefix name its pages alike, and a key says everything that came before it
(`chain_key`). What the key does not cover (the weights, the tokenizer, the KV dtype, the page size...) is the
store's fingerprint: a disk store refuses a directory written under another one.

One page is `np.ndarray [2, L, Hkv, S, D]`: K then V, every layer and KV head, S = page size, in the KV
pages' dtype (ml_dtypes.bfloat16 for bfloat16).

Stores never raise on a damaged entry: `get` returns None for a page that is absent, truncated, fails its
checksum or belongs to another fingerprint, discards it, and counts it (`stats()["refused_corrupt"]`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

PAGE_KEY_BYTES = 16


def chain_key(parent: bytes | None, tokens: Sequence[int], namespace: str) -> bytes:
    """The key of the page holding `tokens` (one whole page) after the page keyed `parent` (None: the first
    page of a prompt), in `namespace` ("" for the shared one)."""
    digest = hashlib.blake2b(digest_size=PAGE_KEY_BYTES)
    digest.update(parent if parent is not None else b"\0" * PAGE_KEY_BYTES)
    digest.update(np.asarray(tokens, dtype=np.int64).tobytes())
    digest.update(namespace.encode("utf-8"))
    return digest.digest()


@dataclass(frozen=True)
class PageEntry:
    """What a store keeps beside a page: enough to rebuild the tree path that leads to it."""

    key: bytes
    parent: bytes | None  # None: the prompt's first page
    tokens: tuple[int, ...]  # the page's tokens (page_size of them)
    namespace: str


class PageStore(Protocol):
    """A tier below the device pool: host RAM or disk."""

    tier: str  # "host" or "disk"

    def put(self, entry: PageEntry, page: np.ndarray) -> bool:
        """Keep `page` under `entry.key` (replacing nothing: a key already held is left as is). False when it
        cannot be kept (larger than the capacity, or the store is closed); may evict older pages to make room."""
        ...

    def get(self, key: bytes) -> np.ndarray | None:
        """The page, or None when absent or found damaged (then discarded and counted)."""
        ...

    def __contains__(self, key: bytes) -> bool: ...

    def discard(self, key: bytes) -> None:
        """Forget `key` (no error when absent)."""
        ...

    def entries(self) -> Iterator[PageEntry]:
        """Every page held, parents before children where both are held (a restart rebuilds paths from it)."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters since creation: pages, bytes, hits, misses, bytes_read, bytes_written, evicted,
        refused_corrupt (the last also counts pages refused for another fingerprint)."""
        ...

    def flush(self) -> None:
        """Make every accepted put durable (disk) or a no-op (host)."""
        ...

    def close(self) -> None: ...
