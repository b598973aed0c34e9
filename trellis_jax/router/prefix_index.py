"""`PrefixIndex`: an approximate record, per worker, of the prompt prefixes routed to it.

A routing key (namespace, then token ids or characters) is cut into blocks of `block_size` elements;
block i is named by a hash chained over the namespace and blocks 0..i, so a name stands for the whole
path from the root: the index is a radix tree over blocks, stored flat. Per worker, the names live in an
LRU-ordered dict capped at `max_blocks` (oldest first out), so memory is bounded whatever the traffic.

    key:     ns | b0 b1 b2 b3 | b4 b5 b6 b7 | b8 b9        (block_size 4; the tail b8 b9 is never stored)
    names:        h0=H(ns,blk0)  h1=H(h0,blk1)
    match:   the number of leading names a worker holds, times block_size (elements)

It is approximate on purpose: it records what was routed, not what the worker still caches (the worker
may have evicted it), matches to block granularity, and evicting a parent before its child leaves the
child unreachable until it is evicted in turn. Pure Python, no locking: the router's event loop owns it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence


class PrefixIndex:
    def __init__(self, block_size: int, max_blocks: int):
        if block_size < 1 or max_blocks < 1:
            raise ValueError(f"block_size and max_blocks must be >= 1, got {block_size} and {max_blocks}")
        self.block_size, self.max_blocks = block_size, max_blocks
        self._blocks: dict[str, OrderedDict[int, None]] = {}  # worker -> block names, least recent first

    def block_names(self, namespace: str, key: Sequence[Hashable]) -> list[int]:
        """The chained names of `key`'s full blocks (pure)."""
        names, parent = [], hash(("ns", namespace))
        for start in range(0, len(key) - self.block_size + 1, self.block_size):
            block = key[start : start + self.block_size]  # a str slice hashes as is; a list needs a tuple
            parent = hash((parent, block if isinstance(block, str) else tuple(block)))
            names.append(parent)
        return names

    def match(self, worker: str, names: list[int]) -> int:
        """How many elements of the key's leading full blocks `worker` holds (pure: no LRU touch)."""
        held = self._blocks.get(worker)
        if not held:
            return 0
        count = 0
        for name in names:
            if name not in held:
                break
            count += 1
        return count * self.block_size

    def insert(self, worker: str, names: list[int]) -> None:
        """Record that `worker` now holds these blocks (mutates: marks them most recent, evicts the least
        recent past `max_blocks`)."""
        held = self._blocks.setdefault(worker, OrderedDict())
        for name in names:
            held[name] = None
            held.move_to_end(name)
        while len(held) > self.max_blocks:
            held.popitem(last=False)

    def size(self, worker: str) -> int:
        """Blocks recorded for `worker`."""
        return len(self._blocks.get(worker, ()))

    def forget(self, worker: str) -> None:
        """Drop everything recorded for `worker` (it failed or left: whatever it cached is gone or stale)."""
        self._blocks.pop(worker, None)
