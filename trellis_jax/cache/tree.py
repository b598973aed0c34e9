"""Structural operations on the radix tree: longest visible match and node splitting.

The cache matches device nodes first (``device_only``), then the demoted nodes that continue that match.

Pure functions over ``TreeNode``; no locking, counting or policy work happens here (``RadixCache``
does that). Keys are tuples of token ids already cut to whole pages; positions are in tokens.

Namespaces are part of the child key ``(owner, first page's tokens)``, never mixed into the tokens, so a
tenant name cannot collide with token ids. Visibility for a request of owner ``o``:
- a private owner sees its own nodes and, when shared namespaces exist, ``SHARED`` nodes — but only as a
  prefix: once a path enters a private node it never returns to shared ones (shared inserts cannot see
  private nodes, so none ever hang below them);
- a shared namespace sees ``SHARED`` nodes only.
A private owner's longest match is the best of the shared trunk and every private branch hanging off it
(a branch may predate the shared node that now covers the same tokens), ties going to the shared path.
"""

from __future__ import annotations

from trellis_jax.cache.node import SHARED, TreeNode

# (node where the match ends, pages of that node that matched, matched tokens in total)
MatchPoint = tuple[TreeNode, int, int]


def common_pages(node_key: tuple, key: tuple, pos: int, page_size: int) -> int:
    """Whole pages of ``node_key`` equal to ``key[pos:]``, given that the first page already matched."""
    n = len(node_key)
    if key[pos : pos + n] == node_key:
        return n // page_size
    lo, hi = 1, min(n, len(key) - pos) // page_size
    # Binary search on slice equality: O(log pages) comparisons, each one done at C speed.
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if key[pos : pos + mid * page_size] == node_key[: mid * page_size]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def walk_owner(node: TreeNode, key: tuple, pos: int, owner, page_size: int, device_only: bool = False) -> MatchPoint:
    """Follow children of one owner from ``node`` (fully matched up to ``pos``) as far as ``key`` goes
    (``device_only``: through device nodes only, node.py)."""
    while pos < len(key):
        child = node.children.get((owner, key[pos : pos + page_size]))
        if child is None or (device_only and child.tier is not None):
            break
        n = common_pages(child.key, key, pos, page_size)
        pos += n * page_size
        if n < child.num_pages:
            return child, n, pos
        node = child
    return node, node.num_pages, pos


def longest_match(
    root: TreeNode, key: tuple, owner, page_size: int, has_shared: bool, device_only: bool = False
) -> MatchPoint:
    """Longest prefix of ``key`` visible to ``owner`` (see the module docstring) below ``root`` (or any node
    fully matched so far: ``key`` then starts after it); ``device_only``: through device nodes only."""
    if owner is SHARED or not has_shared:
        return walk_owner(root, key, 0, owner, page_size, device_only)
    best = walk_owner(root, key, 0, owner, page_size, device_only)
    node, pos = root, 0
    while pos < len(key):
        child = node.children.get((SHARED, key[pos : pos + page_size]))
        if child is None or (device_only and child.tier is not None):
            break
        n = common_pages(child.key, key, pos, page_size)
        pos += n * page_size
        if pos >= best[2]:
            best = (child, n, pos)
        if n < child.num_pages:
            break
        node = child
        if pos < len(key) and (owner, key[pos : pos + page_size]) in node.children:
            branch = walk_owner(node, key, pos, owner, page_size, device_only)
            if branch[2] > best[2]:
                best = branch
    return best


def best_partial_child(node: TreeNode, want: tuple, owner, page_size: int, has_shared: bool):
    """(child, tokens) for the child of ``node`` visible to ``owner`` whose first page starts with the longest
    prefix of ``want`` (at most one page of tokens), or None when no child shares even the first token.

    Visible children follow ``longest_match``'s rule: the owner's own, plus shared ones while the path is
    still shared (``node`` is the root or a shared node). Demoted children (no device page) are skipped.
    """
    if not want:
        return None
    shared_ok = has_shared and owner is not SHARED and (node.parent is None or node.owner is SHARED)
    best, best_len = None, 0
    for (child_owner, first_page), child in node.children.items():
        if first_page[0] != want[0] or not (child_owner == owner or (shared_ok and child_owner is SHARED)):
            continue
        if child.tier is not None:
            continue  # a demoted page holds no device KV to copy from
        length = 1
        while length < len(want) and length < page_size and first_page[length] == want[length]:
            length += 1
        if length > best_len:
            best, best_len = child, length
    return (best, best_len) if best is not None else None


def path_pages(node: TreeNode, pages_in_node: int) -> list[int]:
    """Page ids from the root down to ``node``, keeping only the first ``pages_in_node`` of ``node``."""
    chunks = [node.pages[:pages_in_node]]
    node = node.parent
    while node is not None:
        chunks.append(node.pages)
        node = node.parent
    pages: list[int] = []
    for chunk in reversed(chunks):
        pages.extend(chunk)
    return pages


def split(node: TreeNode, num_pages: int, page_size: int) -> TreeNode:
    """Cut ``node`` after ``num_pages`` pages; returns the new upper node.

    The original object keeps the lower part, so handles to it still mean the same full path; the upper
    node inherits the lock count (every lock through the lower node passes through it), metadata, tier and
    page keys. A demoted node (no device page) splits its page keys instead of its pages.
    """
    cut = num_pages * page_size
    parent = node.parent
    upper = TreeNode(node.key[:cut], node.pages[:num_pages], node.owner, parent, node.created)
    upper.lock_ref = node.lock_ref
    upper.last_access = node.last_access
    upper.access_count = node.access_count
    upper.priority = node.priority
    upper.policy_value = node.policy_value
    upper.tier = node.tier
    if node.page_keys is not None:
        upper.page_keys, node.page_keys = node.page_keys[:num_pages], node.page_keys[num_pages:]
    parent.children[(node.owner, node.key[:page_size])] = upper
    node.key = node.key[cut:]
    node.pages = node.pages[num_pages:]
    node.parent = upper
    upper.children[(node.owner, node.key[:page_size])] = node
    return upper


def iter_nodes(root: TreeNode):
    """Every node below ``root`` (root excluded), parents before children; iterative (deep trees)."""
    stack = list(root.children.values())
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.children.values())
