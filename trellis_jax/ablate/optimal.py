"""Offline optimal bound: the most prompt tokens any eviction policy could serve from a cache of
``capacity`` pages, knowing the future (Belady with bypass on a relaxation of the tree problem).

The relaxation. Flatten the requests, in the order they were served, into a sequence of page
references: request r references the tree nodes (one per whole page; identity = namespace + every token
from the root to the end of the page) of its KV tokens, root to leaf. The first ``(prompt_len - 1) //
page_size`` are *counted* (the engine matches ``prompt[:-1]``: a hit there saves prefill); the rest
(the prompt's tail page, the reply's pages) are *uncounted*: they can be loaded but earn nothing. The
relaxed cache holds at most ``capacity`` pages, may load a page only when it is referenced, may evict
any page at any time, and may skip loading (bypass). A reference to a cached page that is counted is a hit.

Why this is an upper bound on every policy replayed through ``RadixCache`` with the same order and
``num_pages = capacity``: take any run of the real cache and give the relaxed cache, at each reference,
the tree's pages (the real cache holds at most ``capacity`` pages, pages in use included, so the tree
alone fits). Every page the real cache serves as a hit is a tree node present when the request is
matched; it was put there by an earlier reference (an insert) and is present in the relaxed cache too.
So the real run is a feasible relaxed schedule with the same or fewer hits; the relaxed optimum is at
least as large. The relaxation drops three constraints, which is where the gap (if any) comes from: the
tree must stay prefix-closed (a hit needs its whole path), pages of running requests occupy the pool,
and reply pages must be inserted. With shared namespaces the namespace is dropped from page identity
(a private request may hit the shared trunk), which keeps the bound valid and makes it a little looser.

Why the algorithm is optimal for the relaxation: with free loads and bypass, keeping page x between two
consecutive references of x earns 1 exactly when the later one is counted, and the problem is choosing
such intervals with at most ``capacity`` overlapping at any time; "keep the pages whose intervals end
soonest, evict (or bypass) the one whose interval ends furthest" is the classic greedy (earliest right
endpoint) that is optimal for that interval problem (Belady 1966; bypass variant). A page is never kept
past its next reference: if that one is uncounted, it earns nothing and may reload the page for free. The tests check it
against exhaustive search on small traces. Cost: O(references x log capacity) in Python.

``ceiling`` is the bound for any order and any capacity: every counted reference hits except the first
reference of a page that is never referenced uncounted (that one must be computed once somewhere).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trellis_jax.ablate.trace import Trace

NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True)
class PageReferences:
    """The flattened reference sequence of a trace served in a given order, at one page size."""

    nodes: np.ndarray  # [R] int64 node ids (equal id = same tree node)
    counted: np.ndarray  # [R] bool: a hit here saves prefill
    page_size: int

    @property
    def num_counted(self) -> int:
        return int(self.counted.sum())


def page_references(trace: Trace, order: Sequence[int], page_size: int) -> PageReferences:
    """References of ``trace.requests[i]`` for i in ``order``; see the module docstring. O(pages)."""
    requests = trace.requests
    ignore_namespace = bool(trace.shared_namespaces)
    intern: dict[tuple, int] = {}
    nodes: list[int] = []
    counted: list[bool] = []
    for i in order:
        r = requests[i]
        seq = np.concatenate([r.prompt, r.output[: max(r.output_len - 1, 0)]])
        full = len(seq) // page_size
        rows = np.ascontiguousarray(seq[: full * page_size]).view(np.dtype((np.void, 4 * page_size))).tolist()
        parent = ("", -1) if ignore_namespace else (r.namespace, -1)
        for row in rows:
            parent = intern.setdefault((parent, row), len(intern))
            nodes.append(parent)
        n_counted = (r.prompt_len - 1) // page_size
        counted.extend([True] * n_counted + [False] * (full - n_counted))
    return PageReferences(np.array(nodes, np.int64), np.array(counted, bool), page_size)


def next_gainful_reference(refs: PageReferences) -> np.ndarray:
    """[R] position of the next reference to the same node after each reference, where that reference is
    counted; NEVER where the next reference is uncounted or there is none. Keeping a page past its next
    reference is never needed (that reference may load it again for free), so this is when keeping it from
    here pays, if ever."""
    n = len(refs.nodes)
    if n == 0:
        return np.zeros(0, np.int64)
    pos = np.arange(n, dtype=np.int64)
    by_node = np.lexsort((pos, refs.nodes))
    nodes, positions, counted = refs.nodes[by_node], pos[by_node], refs.counted[by_node]
    following = np.full(n, NEVER, np.int64)
    gainful = (nodes[1:] == nodes[:-1]) & counted[1:]
    following[:-1] = np.where(gainful, positions[1:], NEVER)
    result = np.empty(n, np.int64)
    result[by_node] = following
    return result


def belady_hits(refs: PageReferences, capacity: int, next_use: np.ndarray | None = None) -> int:
    """Most counted references that can hit with ``capacity`` pages (Belady with bypass); in pages."""
    if capacity < 0:
        raise ValueError(f"capacity must be >= 0, got {capacity}")
    next_use = next_gainful_reference(refs) if next_use is None else next_use
    cached: dict[int, int] = {}  # node -> the reference its stay pays off at
    heap: list[tuple[int, int]] = []  # (-next use, node); entries whose value is stale are skipped
    hits = 0
    for node, counted, nxt in zip(refs.nodes.tolist(), refs.counted.tolist(), next_use.tolist()):
        if node in cached:
            hits += counted
            if nxt == NEVER:
                del cached[node]
            else:
                cached[node] = nxt
                heapq.heappush(heap, (-nxt, node))
            continue
        if nxt == NEVER or capacity == 0:
            continue  # bypass: never useful again
        if len(cached) >= capacity:
            while cached.get(heap[0][1]) != -heap[0][0]:
                heapq.heappop(heap)
            if -heap[0][0] <= nxt:
                continue  # bypass: every cached page pays off sooner
            del cached[heapq.heappop(heap)[1]]
        cached[node] = nxt
        heapq.heappush(heap, (-nxt, node))
    return hits


def infinite_capacity_hits(refs: PageReferences) -> int:
    """Counted references to a node referenced before them (the order's compulsory misses excluded)."""
    _, first = np.unique(refs.nodes, return_index=True)
    seen_before = np.ones(len(refs.nodes), bool)
    seen_before[first] = False
    return int((seen_before & refs.counted).sum())


def ceiling_hits(refs: PageReferences) -> int:
    """Upper bound for any order and capacity: one miss per node that is only ever referenced counted."""
    only_counted = np.ones(int(refs.nodes.max()) + 1 if len(refs.nodes) else 0, bool)
    only_counted[refs.nodes[~refs.counted]] = False
    referenced = np.unique(refs.nodes[refs.counted])
    return refs.num_counted - int(only_counted[referenced].sum())
