"""TreeNode: one edge of the radix tree, holding whole pages of one owner.

A node stores ``key`` (token ids, ``len(key) == len(pages) * page_size``), the ``pages`` that hold their
KV, its ``owner`` (a private namespace string or ``SHARED``) and ``depth`` (tokens from the root to the
end of this node). The access metadata (``last_access``, ``access_count``, ``created``, ``priority``) is
written by the cache and read by eviction policies; ``policy_value`` is a free slot for policy state.
Nodes double as the opaque handles returned by ``RadixCache.match`` / ``insert``.

Tiers (tiers.py): ``tier`` is None for a node whose pages are device pages; "host" or "disk" for a
demoted node, which keeps its ``key`` but holds no device page (``pages == []``) and is never locked. Every
descendant of a demoted node is demoted (eviction demotes from the bottom, reload promotes from the top).
``page_keys`` memoizes the chained page keys (kvstore.api.chain_key) of the node's pages, None until needed.
"""

from __future__ import annotations


class _SharedOwner:
    """Owner of nodes inserted through a shared namespace; not a str, so no tenant name can equal it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SHARED"


SHARED = _SharedOwner()


class TreeNode:
    __slots__ = (
        "key",
        "pages",
        "owner",
        "parent",
        "children",
        "depth",
        "lock_ref",
        "alive",
        "last_access",
        "access_count",
        "created",
        "priority",
        "policy_value",
        "tier",
        "page_keys",
    )

    def __init__(self, key: tuple[int, ...], pages: list[int], owner, parent: TreeNode | None, tick: int) -> None:
        self.key = key
        self.pages = pages
        self.owner = owner
        self.parent = parent
        self.children: dict[tuple, TreeNode] = {}  # (owner, first page's tokens) -> child
        self.depth = (parent.depth if parent is not None else 0) + len(key)
        self.lock_ref = 0
        self.alive = True
        self.last_access = tick
        self.access_count = 0
        self.created = tick
        self.priority = 0
        self.policy_value = 0.0
        self.tier: str | None = None  # None: device pages; "host" / "disk": demoted (pages == [])
        self.page_keys: list[bytes] | None = None  # chained page keys, computed when first needed

    @property
    def num_pages(self) -> int:
        """Pages of the key (a demoted node's too, which holds no device page)."""
        return len(self.pages) if self.tier is None else len(self.page_keys)

    @property
    def num_tokens(self) -> int:
        return len(self.key)

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def is_device_leaf(self) -> bool:
        """A device node with no device child (only demoted ones, or none): what eviction may take."""
        return self.tier is None and not any(child.tier is None for child in self.children.values())

    def __repr__(self) -> str:
        head = self.key[:4]
        return (
            f"TreeNode(owner={self.owner!r}, tokens={len(self.key)}, head={head}, pages={self.pages[:4]}"
            f"{'...' if len(self.pages) > 4 else ''}, depth={self.depth}, lock_ref={self.lock_ref})"
        )
