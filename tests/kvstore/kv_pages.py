"""Pages and entries for the kvstore tests: small, deterministic, and computable from the key alone."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from trellis_jax.kvstore import PageEntry, chain_key

PAGE_SIZE = 4
SHAPE = (2, 2, 2, PAGE_SIZE, 8)  # [K/V, layers, KV heads, page size, head dim]
FINGERPRINT = {"weights": "w1", "tokenizer": "t1", "dtype": "float32", "kv_dtype": "float32", "page_size": "4"}
BF16 = np.dtype(ml_dtypes.bfloat16)


def chain(num_pages: int, *, first_token: int = 0, namespace: str = "") -> list[PageEntry]:
    """The entries of one prompt's pages, parents first."""
    entries, parent = [], None
    for i in range(num_pages):
        tokens = tuple(range(first_token + i * PAGE_SIZE, first_token + (i + 1) * PAGE_SIZE))
        key = chain_key(parent, tokens, namespace)
        entries.append(PageEntry(key=key, parent=parent, tokens=tokens, namespace=namespace))
        parent = key
    return entries


def page_for(entry: PageEntry, dtype=np.float32, shape=SHAPE) -> np.ndarray:
    """A page whose values depend on its key only, so any page served can be checked against its key."""
    rng = np.random.default_rng(int.from_bytes(entry.key[:8], "little"))
    return rng.standard_normal(shape).astype(dtype)
