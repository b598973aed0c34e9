"""What every store's `put` refuses with a ValueError before it keeps anything: a caller's bug, said at once.

(A damaged page found later is not a caller's bug: stores discard and count those, see api.py.)
"""

from __future__ import annotations

import numpy as np

from trellis_jax.kvstore.api import PAGE_KEY_BYTES, PageEntry


def check_put(entry: PageEntry, page: np.ndarray) -> None:
    if not isinstance(entry.key, bytes) or len(entry.key) != PAGE_KEY_BYTES:
        raise ValueError(f"a page key is {PAGE_KEY_BYTES} bytes, got {entry.key!r}")
    if entry.parent is not None and (not isinstance(entry.parent, bytes) or len(entry.parent) != PAGE_KEY_BYTES):
        raise ValueError(f"a parent key is None or {PAGE_KEY_BYTES} bytes, got {entry.parent!r}")
    if not isinstance(page, np.ndarray) or page.dtype.hasobject:
        raise ValueError(f"a KV page is a numeric numpy array, got {type(page).__name__} {getattr(page, 'dtype', '')}")
