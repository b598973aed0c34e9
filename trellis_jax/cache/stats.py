"""CacheStats: one snapshot of the cache's counters (cumulative since ``reset_stats``) and gauges (now).

``dedup_ratio`` = logical KV tokens referenced by live requests (sum of the token depth of every held
lock) ÷ physical tokens stored in locked nodes. 1.0 means no sharing; 3.0 means live requests see three
times the KV they physically occupy. It is 1.0 when no lock is held.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Counters:
    """Cumulative counters, mutated by RadixCache."""

    hit_tokens: int = 0
    miss_tokens: int = 0
    match_calls: int = 0
    inserted_pages: int = 0
    duplicate_pages_freed: int = 0
    evicted_pages: int = 0


@dataclass(frozen=True)
class CacheStats:
    hit_tokens: int
    miss_tokens: int
    match_calls: int
    inserted_pages: int
    duplicate_pages_freed: int
    evicted_pages: int
    resident_pages: int
    evictable_pages: int
    locked_pages: int
    private_pages: int
    free_pages: int
    locked_logical_tokens: int
    page_size: int

    @property
    def hit_rate(self) -> float:
        """Fraction of matched prompt tokens served from the cache (0.0 before any match)."""
        total = self.hit_tokens + self.miss_tokens
        return self.hit_tokens / total if total else 0.0

    @property
    def dedup_ratio(self) -> float:
        physical = self.locked_pages * self.page_size
        return self.locked_logical_tokens / physical if physical else 1.0
