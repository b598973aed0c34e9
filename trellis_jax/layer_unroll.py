"""How far the decoder-layer loop is unrolled: one spelling for the engine option, the runner and the model.

Contract: `normalize(value) -> int` turns any accepted spelling into the canonical value every layer keys
on (a static jit argument, a compile-cache key):
    SCAN (1)   one layer per iteration of a `lax.scan` while loop (compile time flat in depth);
    N >= 2     `lax.scan(..., unroll=N)`: N layers inline per iteration, ceil(L / N) iterations (N >= L: full);
    FULL (-1)  every layer inline, no loop (on an H200 the fastest step, at ~8x the compile time).
Accepted: 0 or 1 (scan), N >= 2, -1, the strings "scan", "full" and those integers written out, and the old
boolean spelling: False (scan), True (full). Anything else is a ValueError naming the spellings; `parse_flag`
is the same for argparse (an ArgumentTypeError). Note 0 means "no unroll" here as False does, unlike
`lax.scan`'s own `unroll=0` (which unrolls everything).
`scan_unroll(value, num_layers)`: the `unroll=` argument `lax.scan` gets for a model of num_layers layers.
`fully_unrolled(value, num_layers)`: whether no loop is left (each layer's weight slice is then static).
`describe(value)`: "scan", "N" or "full", for tables and logs.
Neutral: no imports beyond the standard library, so the engine's config reads it without loading jax.
"""

from __future__ import annotations

import argparse
import operator

SCAN = 1
FULL = -1
SPELLINGS = "0 or 1 or 'scan' (a scanned loop), N >= 2 (N layers per loop iteration), -1 or 'full' (no loop)"


def normalize(value) -> int:
    """Any accepted spelling -> SCAN, N >= 2 or FULL; ValueError for anything else."""
    if isinstance(value, bool):  # before int: True is an int equal to 1, and meant "unroll everything"
        return FULL if value else SCAN
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("scan", "full"):
            return SCAN if text == "scan" else FULL
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"unroll_layers: cannot read {value!r}; give {SPELLINGS}") from None
    try:
        value = operator.index(value)  # an int or a numpy integer; not a float, not None
    except TypeError:
        raise ValueError(f"unroll_layers: cannot use {value!r}; give {SPELLINGS}") from None
    if value < FULL:
        raise ValueError(f"unroll_layers: cannot use {value!r}; give {SPELLINGS}")
    return SCAN if value in (0, SCAN) else value


def scan_unroll(value, num_layers: int) -> int:
    """`lax.scan`'s unroll= for num_layers layers: 1, N (at most num_layers) or num_layers."""
    unroll = normalize(value)
    return num_layers if unroll == FULL else min(unroll, num_layers)


def fully_unrolled(value, num_layers: int) -> bool:
    """Whether the layers run with no loop around them."""
    unroll = normalize(value)
    return unroll == FULL or (unroll != SCAN and unroll >= num_layers)


def describe(value) -> str:
    unroll = normalize(value)
    return "scan" if unroll == SCAN else "full" if unroll == FULL else str(unroll)


def parse_flag(text: str) -> int:
    """argparse `type=` for --unroll-layers: the canonical value, or a usage error naming the spellings."""
    try:
        return normalize(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
