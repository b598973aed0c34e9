"""The matmul op's measured choices: which backend multiplies a weight of this kind and shape fastest for a
step of this many rows, as calibrate.py measured it on this machine (or as a user pinned it).

Contract:
  `ROW_CLASSES`: the shape classes, as (name, most rows, rows timed): a step of M rows belongs to the first
      class whose bound is >= M (the last has no bound). Decode steps fall in the first three, prefill
      chunks in the last. "small" (timed at 2 rows, batch-1 decode's bucket) is apart from "decode" because
      the backends cost differently in M: the native kernels skip padding rows and read the codes once per
      row tile, XLA's packed path dequantizes every weight once per step whatever M, so at 16 rows the
      two can tie while at 2 the native kernel is ~3x faster (docs/benchmarks/quantized.md).
  `row_class(m) -> name`; `weight_kind(w) -> str` (the layout: "float32", "bfloat16", "float32-strips",
      "bfloat16-pairs", or a quantized format such as "Q4_1"); `dims(w) -> (K, N)` of the matrix w stands for.
  `Entry(kind, k, n, row_class)`: a table key. `install(choices)`: add {Entry: "native" | "xla"} to this
      process's table (a later install of the same key replaces it). `lookup(w, m) -> "native" | "xla" |
      None`: the installed choice for w and an M-row step, None when nothing was measured or pinned for it
      (the op then keeps its rules). `installed(entries) -> bool`: all present. `signature()`: the table as
      a sorted tuple (what compiled programs depend on). `clear()`: empty it (tests).
Why a process table and not a model argument: the choice is a fact about this machine and a static shape,
made before any step is traced (so no recompilation), and the op's `choose` reads it at trace time where
only the shapes are known; keyed by kind and shape, several models in one process never share an entry
unless their matrices are alike, when the measurement is the same one.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import jax.numpy as jnp

from pallas_kernels.matmul import native_bf16, native_f32, quantized

BACKENDS = ("native", "xla")
ROW_CLASSES = (("small", 4, 2), ("decode", 16, 16), ("batch", 32, 32), ("wide", 64, 64), ("prefill", None, 256))


class Entry(NamedTuple):
    kind: str
    k: int
    n: int
    row_class: str


_lock = threading.Lock()
_table: dict[Entry, str] = {}


def row_class(m: int) -> str:
    """The class a step of `m` rows belongs to."""
    return next(name for name, bound, _ in ROW_CLASSES if bound is None or m <= bound)


def weight_kind(w) -> str:
    """The layout of a (stacked or single) weight, as the table keys it."""
    if quantized.is_quantized(w):
        return w.fmt
    if native_bf16.is_packed(w):
        return "bfloat16-pairs"
    if native_f32.is_strips(w):
        return "float32-strips"
    return jnp.dtype(w.dtype).name


def dims(w) -> tuple[int, int]:
    """(K, N) of the matrix that w (or one layer of it) stands for."""
    if native_bf16.is_packed(w):
        k2, n = native_bf16.packed_dims(w)
        return 2 * k2, n
    if native_f32.is_strips(w):
        return w.shape[-2], w.shape[-3] * w.shape[-1]
    k, n = w.shape[-2:]
    return int(k), int(n)


def entry(w, m: int) -> Entry:
    return Entry(weight_kind(w), *dims(w), row_class(m))


def install(choices: dict[Entry, str]) -> None:
    bad = {key: value for key, value in choices.items() if value not in BACKENDS}
    if bad:
        raise ValueError(f"matmul choices must be one of {BACKENDS}, got {bad}")
    with _lock:
        _table.update(choices)


def lookup(w, m: int) -> str | None:
    return _table.get(entry(w, m))


def installed(entries) -> bool:
    return all(key in _table for key in entries)


def signature() -> tuple:
    with _lock:
        return tuple(sorted(_table.items()))


def clear() -> None:
    with _lock:
        _table.clear()
