"""Parents before children: the order `entries()` lists pages in, so a restart rebuilds each tree path top down.

Pages chain through `PageEntry.parent`; a page whose parent is not held (evicted, refused) starts a chain of
its own. Chains can be thousands of pages long (a 128k-token prompt in pages of 16), so depths are computed
by walking, not by recursion.
"""

from __future__ import annotations

from collections.abc import Iterable

from trellis_jax.kvstore.api import PageEntry


def parents_first(entries: Iterable[PageEntry]) -> list[PageEntry]:
    """`entries` (one per key; a later duplicate key wins) sorted by depth below the nearest held root."""
    by_key = {entry.key: entry for entry in entries}
    depth: dict[bytes, int] = {}
    for key in by_key:
        path = []
        while key in by_key and key not in depth and key not in path:  # `in path`: never loop on a cycle
            path.append(key)
            key = by_key[key].parent
        below = depth.get(key, -1) if key in by_key else -1
        for upper in reversed(path):
            below += 1
            depth[upper] = below
    return sorted(by_key.values(), key=lambda entry: depth[entry.key])
