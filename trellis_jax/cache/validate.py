"""Argument checks for RadixCache.insert / free_pages, kept apart so the cache reads as its contract.

All checks run before the cache mutates anything, and fail with a ValueError naming the bad value.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from trellis_jax.cache.allocator import PageAllocator
from trellis_jax.cache.node import SHARED, TreeNode


def insert_args(tokens: Sequence[int], page_ids: Sequence[int], page_size: int) -> tuple[tuple, list[int]]:
    """``(key, page ids)`` as a tuple and a list of ints, after checking they describe whole pages."""
    if len(tokens) % page_size:
        raise ValueError(f"insert needs whole pages: {len(tokens)} tokens, page_size {page_size}")
    try:  # accept any integer type (numpy ints too), refuse floats and strings
        page_ids = list(map(operator.index, page_ids))
    except TypeError:
        raise ValueError(f"page ids must be integers, got {list(page_ids)[:8]}") from None
    if len(page_ids) != len(tokens) // page_size:
        raise ValueError(f"{len(tokens)} tokens need {len(tokens) // page_size} page ids, got {len(page_ids)}")
    if len(set(page_ids)) != len(page_ids):
        raise ValueError(f"duplicate page ids passed to insert: {page_ids}")
    return tuple(tokens), page_ids


def check_private(allocator: PageAllocator, page_node: list[TreeNode | None], page_ids: list[int]) -> None:
    """Every page is allocated and outside the tree (private to a request), else ValueError."""
    # Fast checks first (C-speed map over the page->node list); find the culprit only on failure.
    if allocator.are_allocated(page_ids) and not any(map(page_node.__getitem__, page_ids)):
        return
    bad = next(p for p in page_ids if not allocator.is_allocated(p) or page_node[p] is not None)
    raise ValueError(f"page {bad!r} is not a private page (allocated, outside the tree)")


def is_alternate_copy(
    page_node: list[TreeNode | None], page: int, index: int, key: tuple, owner, page_size: int
) -> bool:
    """True if ``page`` is a tree page holding ``key``'s page ``index`` on another visible path.

    A private prefix can coexist with a shared copy inserted later; a request locked on the private
    copy passes those pages while the canonical path is the shared one. They stay in the tree (the
    caller's old lock still holds them) instead of being freed as duplicates.
    """
    node = page_node[page] if 0 < page < len(page_node) else None
    if node is None or node.owner not in (owner, SHARED):
        return False
    offset = node.pages.index(page)
    end = node.depth - (len(node.pages) - 1 - offset) * page_size
    same_tokens = node.key[offset * page_size : (offset + 1) * page_size] == key[end - page_size : end]
    return end == (index + 1) * page_size and same_tokens
