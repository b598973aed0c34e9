"""The finite set of step shapes the runner compiles: (token rows T, sequence rows S, pages per row P).

Contract: `BucketSet.select(num_tokens, num_seqs, num_pages)` returns the smallest compiled shape that
holds a step, or raises `BucketOverflowError` naming the limit it exceeds; `BucketSet.all()` lists every
shape `select` can return, which is exactly what warm-up compiles.

Each token bucket T is paired with one sequence bucket: the smallest S >= min(T, max_num_seqs), i.e. the
rows a pure decode of T sequences needs. So decode steps get exact S (the LM head and the sampler run on
S rows), a prefill-heavy step pays for at most max_num_seqs rows of logits (a few ms next to its
forward), and warm-up compiles |T buckets| x |P buckets| programs instead of a full T x S grid.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import NamedTuple


class Bucket(NamedTuple):
    num_tokens: int  # T
    num_seqs: int  # S
    pages_per_seq: int  # P


class BucketOverflowError(ValueError):
    """A step is larger than the largest compiled bucket (the scheduler must respect the runner's limits)."""


def powers_of_two(low: int, high: int) -> tuple[int, ...]:
    """low, 2*low, ... up to and including `high` (added even if not a power of two)."""
    if not 1 <= low <= high:
        raise ValueError(f"need 1 <= low <= high, got {low}, {high}")
    values = []
    value = low
    while value < high:
        values.append(value)
        value *= 2
    return tuple(values) + (high,)


def prefill_friendly(low: int, high: int, *, fine_from: int = 128, per_octave: int = 4) -> tuple[int, ...]:
    """Powers of two from `low` up to `fine_from`, then `per_octave` evenly spaced sizes per doubling,
    ending at `high`: 8, 16, 32, 64, 128, 160, 192, 224, 256, 320, ... for (8, 512).

    Why: a step costs about its padded size, and prefill chunks land anywhere (a 293-token prompt padded
    to 512 did 75 % more work than it needed). Above `fine_from` a step pads by at most 1/per_octave of
    itself, for one compile per extra bucket (once per machine with the persistent compile cache).
    """
    if not 1 <= low <= high or per_octave < 1:
        raise ValueError(f"need 1 <= low <= high and per_octave >= 1, got {low}, {high}, {per_octave}")
    values = set(powers_of_two(low, min(high, max(low, fine_from))))
    octave = max(low, fine_from)
    while octave < high:
        step = max(1, octave // per_octave)
        values.update(min(octave + i * step, high) for i in range(1, per_octave + 1))
        octave *= 2
    return tuple(sorted(v for v in values if v <= high))


@dataclass(frozen=True)
class BucketSet:
    token_buckets: tuple[int, ...]
    seq_buckets: tuple[int, ...]
    page_buckets: tuple[int, ...]

    def __post_init__(self):
        for name in ("token_buckets", "seq_buckets", "page_buckets"):
            values = tuple(getattr(self, name))
            if not values or any(not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f"{name} must be a non-empty list of positive ints, got {values!r}")
            object.__setattr__(self, name, tuple(sorted(set(values))))
        if self.max_num_seqs > self.max_num_tokens:
            raise ValueError(
                f"largest seq bucket {self.max_num_seqs} exceeds largest token bucket "
                f"{self.max_num_tokens}: a step of that many sequences could never be filled"
            )

    @property
    def max_num_tokens(self) -> int:
        return self.token_buckets[-1]

    @property
    def max_num_seqs(self) -> int:
        return self.seq_buckets[-1]

    @property
    def max_pages_per_seq(self) -> int:
        return self.page_buckets[-1]

    def seqs_for(self, tokens: int) -> int:
        """The sequence rows paired with token bucket `tokens`."""
        return _smallest_at_least(self.seq_buckets, min(tokens, self.max_num_seqs), "sequences", "max_num_seqs")

    def select(self, num_tokens: int, num_seqs: int, num_pages: int) -> Bucket:
        """Smallest bucket with T >= num_tokens, S >= num_seqs, P >= num_pages."""
        if num_seqs < 1 or num_tokens < num_seqs:
            raise ValueError(
                f"a step needs >= 1 sequence and >= 1 token per sequence, "
                f"got {num_tokens} tokens for {num_seqs} sequences"
            )
        _smallest_at_least(self.seq_buckets, num_seqs, "sequences", "max_num_seqs")  # overflow check
        tokens = _smallest_at_least(self.token_buckets, num_tokens, "tokens", "max_num_tokens")
        pages = _smallest_at_least(self.page_buckets, num_pages, "pages per sequence", "max_pages_per_seq")
        return Bucket(tokens, self.seqs_for(tokens), pages)  # seqs_for(tokens) >= min(T, max S) >= num_seqs

    def all(self) -> list[Bucket]:
        """Every bucket `select` can return, smallest first."""
        return [
            Bucket(tokens, self.seqs_for(tokens), pages) for tokens in self.token_buckets for pages in self.page_buckets
        ]


def _smallest_at_least(values: tuple[int, ...], needed: int, what: str, limit_name: str) -> int:
    index = bisect.bisect_left(values, needed)
    if index == len(values):
        raise BucketOverflowError(
            f"step has {needed} {what}, more than the largest compiled bucket "
            f"({limit_name} = {values[-1]}); the scheduler must stay within it"
        )
    return values[index]
