"""The range every request field may take: what it means, clipped to what the step's wire format carries.

Contract: `FIELD_RANGES[name] -> FieldRange` is the one table; `check_field(name, value, owner=)` returns
the value or raises `FieldRangeError` (a ValueError naming the field and its allowed range), and
`check_token_ids(ids, vocab_size)` does the same for a prompt given as token ids. Neutral: numpy only,
no jax, so the engine, the server and the runner all read the same table.

Why one table: a value the step's arrays cannot hold (top_k = 2**31 in an int32 column) used to pass
validation and fail while the whole batch was packed, taking every in-flight request down with it. Each
field's bounds are its meaning (top_p in (0, 1]) intersected with its wire dtype's range (numpy iinfo /
finfo of `WIRE_INT`, `WIRE_FLOAT`, `WIRE_SEED`, the dtypes `runner/wire.py` and `runner/packing.py`
encode with), so no field's upper bound is a guess. Floats must also be finite.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import cached_property

import numpy as np

WIRE_INT = np.dtype(np.int32)  # token ids, positions, top_k, num_logprobs, lengths: the step's int32 columns
WIRE_FLOAT = np.dtype(np.float32)  # temperature, top_p, min_p, penalties: bit-cast into the int32 buffer
WIRE_SEED = np.dtype(np.uint32)  # the PRNG seed, bit-cast into the int32 buffer

MAX_LOGPROBS = 20  # top alternatives per token a request may ask for
MAX_LOGIT_BIAS = 300  # logit_bias entries per request (OpenAI's limit; the sampler's fixed table width)


class FieldRangeError(ValueError):
    """A request field outside its range (or of the wrong type); `.field` names it, `.detail` is the
    message without the owner's prefix (what an HTTP client, who never wrote "SamplingParams", reads)."""

    def __init__(self, field: str, detail: str, owner: str = "") -> None:
        super().__init__(f"{owner}.{detail}" if owner else detail)
        self.field, self.detail = field, detail


@dataclass(frozen=True)
class FieldRange:
    """`dtype` is what the value travels as; `lo`/`hi` its meaning's bounds (None: the dtype's own);
    `lo_open`: the lower bound itself is excluded (top_p > 0)."""

    dtype: np.dtype
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False

    @property
    def is_int(self) -> bool:
        return self.dtype.kind in "iu"

    @cached_property  # packing checks every row's knobs each step: compute the bounds once, not per call
    def bounds(self) -> tuple:
        """(lo, hi) of the meaning intersected with what the dtype holds."""
        info = np.iinfo(self.dtype) if self.is_int else np.finfo(self.dtype)
        kind = int if self.is_int else float
        lo = kind(info.min) if self.lo is None else max(self.lo, kind(info.min))
        hi = kind(info.max) if self.hi is None else min(self.hi, kind(info.max))
        return lo, hi

    def describe(self) -> str:
        lo, hi = self.bounds
        what = "an integer" if self.is_int else "a finite number"
        return f"{what} in {'(' if self.lo_open else '['}{lo}, {hi}]"

    def holds(self, value) -> bool:
        if type(value) is not (int if self.is_int else float) and not self._is_number(value):
            return False  # the exact-type test first: the ABC checks cost microseconds, per row, per step
        if not self.is_int and not isinstance(value, int) and not math.isfinite(value):  # ints: exact, however large
            return False
        lo, hi = self.bounds
        return (lo < value if self.lo_open else lo <= value) and value <= hi

    def _is_number(self, value) -> bool:
        return not isinstance(value, bool) and isinstance(value, numbers.Integral if self.is_int else numbers.Real)


FIELD_RANGES: dict[str, FieldRange] = {
    "n": FieldRange(WIRE_INT, lo=1),
    "max_tokens": FieldRange(WIRE_INT, lo=1),  # output positions travel as int32 too
    "logprobs": FieldRange(WIRE_INT, lo=0, hi=MAX_LOGPROBS),  # num_logprobs column
    "top_logprobs": FieldRange(WIRE_INT, lo=0, hi=MAX_LOGPROBS),
    "top_k": FieldRange(WIRE_INT, lo=-1),  # -1 and 0: off
    "seed": FieldRange(WIRE_SEED),
    "stop_token_ids": FieldRange(WIRE_INT, lo=0),  # compared with sampled int32 token ids
    "prompt_token_ids": FieldRange(WIRE_INT, lo=0),  # the token_ids column; check_token_ids adds the vocabulary
    "priority": FieldRange(WIRE_INT),
    "temperature": FieldRange(WIRE_FLOAT, lo=0.0),
    "top_p": FieldRange(WIRE_FLOAT, lo=0.0, hi=1.0, lo_open=True),
    "min_p": FieldRange(WIRE_FLOAT, lo=0.0, hi=1.0),
    "presence_penalty": FieldRange(WIRE_FLOAT, lo=-2.0, hi=2.0),
    "frequency_penalty": FieldRange(WIRE_FLOAT, lo=-2.0, hi=2.0),
    "repetition_penalty": FieldRange(WIRE_FLOAT, lo=0.0, lo_open=True),
    "logit_bias": FieldRange(WIRE_FLOAT, lo=-100.0, hi=100.0),  # each bias value (OpenAI's range)
}


def check_field(name: str, value, *, owner: str = ""):
    """`value` if FIELD_RANGES[name] holds it, else FieldRangeError ('<owner>.<name> must be ..., got ...')."""
    field = FIELD_RANGES[name]
    if not field.holds(value):
        raise FieldRangeError(name, f"{name} must be {field.describe()}, got {_shown(value)}", owner)
    return value


def check_token_ids(token_ids, vocab_size: int, *, name: str = "prompt_token_ids") -> list[int]:
    """The ids as a list if each is an int in [0, vocab_size) (and in the int32 column), else FieldRangeError."""
    lo, hi = FIELD_RANGES["prompt_token_ids"].bounds
    top = min(hi, vocab_size - 1)
    for i, token in enumerate(token_ids):
        if isinstance(token, bool) or not isinstance(token, numbers.Integral) or not lo <= token <= top:
            raise FieldRangeError(
                name,
                f"{name}[{i}]: token id {_shown(token)} is outside the vocabulary; token "
                f"ids must be integers in [{lo}, {top}]",
            )
    return [int(t) for t in token_ids]


def _shown(value) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."
