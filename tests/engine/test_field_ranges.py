"""The request field table (trellis_jax/field_ranges.py): every field's range is its meaning clipped to the
wire dtype it travels as, and SamplingParams, token-id prompts and priorities are checked against it with
errors that name the field and the allowed range."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trellis_jax.engine.api import SamplingParams
from trellis_jax.field_ranges import (
    FIELD_RANGES,
    FieldRangeError,
    check_field,
    check_token_ids,
)
from trellis_jax.runner import wire
from trellis_testing.fakes import make_fake_engine

INT_FIELDS = ["n", "top_k", "seed", "max_tokens", "logprobs"]
FLOAT_FIELDS = ["temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty"]
EXTREME_INTS = [2**31, 2**63, -(2**31) - 1, 2**64, -(2**63) - 1]
NON_FINITE = [math.nan, math.inf, -math.inf, 1e39, -1e39]
WRONG_TYPES = [True, False, "1", 1.5, None]


def test_int_bounds_come_from_the_wire_dtype():
    int32 = np.iinfo(np.int32)
    assert FIELD_RANGES["top_k"].bounds == (-1, int32.max)
    assert FIELD_RANGES["seed"].bounds == (0, np.iinfo(np.uint32).max)
    assert FIELD_RANGES["priority"].bounds == (int32.min, int32.max)


def test_float_bounds_come_from_the_wire_dtype():
    assert FIELD_RANGES["temperature"].bounds == (0.0, float(np.finfo(np.float32).max))
    assert FIELD_RANGES["top_p"].bounds == (0.0, 1.0) and FIELD_RANGES["top_p"].lo_open


def test_the_wire_encodes_with_the_table_dtypes():
    assert np.dtype(wire.WIRE_INT) == FIELD_RANGES["top_k"].dtype
    assert np.dtype(wire.WIRE_FLOAT) == FIELD_RANGES["temperature"].dtype
    assert np.dtype(wire.WIRE_SEED) == FIELD_RANGES["seed"].dtype


def _outside(name: str) -> list[int]:
    lo, hi = FIELD_RANGES[name].bounds
    return [v for v in EXTREME_INTS + [lo - 1, hi + 1] if not lo <= v <= hi]


@pytest.mark.parametrize(("name", "value"), [(name, v) for name in INT_FIELDS for v in _outside(name)])
def test_extreme_ints_are_rejected_naming_field_and_range(name, value):
    lo, hi = FIELD_RANGES[name].bounds
    with pytest.raises(FieldRangeError, match=rf"SamplingParams\.{name} must be an integer in \[{lo}, {hi}\]") as error:
        SamplingParams(**{name: value})
    assert error.value.field == name


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_non_finite_or_float32_overflowing_floats_are_rejected(name, value):
    with pytest.raises(FieldRangeError, match=rf"SamplingParams\.{name} must be a finite number in "):
        SamplingParams(**{name: value})


@pytest.mark.parametrize("value", [True, "1", 1.5])
@pytest.mark.parametrize("name", INT_FIELDS)
def test_bools_strings_and_floats_are_not_ints(name, value):
    with pytest.raises(FieldRangeError, match=name):
        SamplingParams(**{name: value})


@pytest.mark.parametrize("value", [True, "0.5", None])
@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_bools_strings_and_none_are_not_numbers(name, value):
    with pytest.raises(FieldRangeError, match=name):
        SamplingParams(**{name: value})


@pytest.mark.parametrize("value", EXTREME_INTS + [-1, True, 2.0])
def test_stop_token_ids_are_int32_token_ids(value):
    with pytest.raises(FieldRangeError, match="stop_token_ids must be an integer in"):
        SamplingParams(stop_token_ids=[3, value])


def test_the_largest_carried_values_are_accepted():
    top = SamplingParams(
        top_k=2**31 - 1,
        seed=2**32 - 1,
        max_tokens=2**31 - 1,
        stop_token_ids=[2**31 - 1],
        temperature=float(np.finfo(np.float32).max),
    )
    assert (top.top_k, top.seed) == (2**31 - 1, 2**32 - 1)
    assert SamplingParams(top_k=-1).top_k == 0


def test_integer_valued_floats_knobs_accept_ints():
    assert SamplingParams(temperature=0, top_p=1, repetition_penalty=2).temperature == 0


@pytest.mark.parametrize("ids", [[1, 258], [1, -1], [2**31], [2**63], [1, True], [1, 2.0]])
def test_token_id_prompts_must_be_in_the_vocabulary(ids):
    with pytest.raises(
        FieldRangeError,
        match=r"prompt_token_ids\[\d\]: token id .* outside the vocabulary; token "
        r"ids must be integers in \[0, 257\]",
    ):
        check_token_ids(ids, 258)


def test_check_field_returns_the_value_it_accepts():
    assert check_field("top_k", 40) == 40


@pytest.mark.parametrize("priority", [2**31, -(2**31) - 1, True, 1.0])
def test_engine_rejects_a_priority_past_int32(priority):
    engine, *_ = make_fake_engine()
    with pytest.raises(FieldRangeError, match="priority must be an integer in"):
        engine.add_request("r", [1, 2, 3], SamplingParams(), priority=priority)
    assert not engine.has_unfinished()


def test_llm_rejects_an_out_of_vocabulary_token_prompt_before_queueing():
    from trellis_jax.engine.api import LLM

    engine, _runner, _cache, tokenizer = make_fake_engine()
    llm = LLM.from_engine(engine, tokenizer)
    with pytest.raises(FieldRangeError, match="outside the vocabulary"):
        llm.generate([[1, 2], [3, 2**40]], SamplingParams(max_tokens=2))
    assert not engine.has_unfinished()
