"""StructuredOutput and logit_bias as request parameters: mapping from OpenAI bodies and validation (no model)."""

from __future__ import annotations

import json

import pytest

from trellis_jax.engine.sampling_params import SamplingParams
from trellis_jax.engine.structured import StructuredOutput
from trellis_jax.field_ranges import FieldRangeError


def test_text_response_format_is_no_constraint():
    assert StructuredOutput.from_response_format({"type": "text"}) is None
    assert StructuredOutput.from_response_format(None) is None


def test_json_object_and_json_schema_map_to_their_kinds():
    assert StructuredOutput.from_response_format({"type": "json_object"}) == StructuredOutput("json_object")
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    got = StructuredOutput.from_response_format({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert got.kind == "json_schema" and json.loads(got.spec) == schema


@pytest.mark.parametrize(
    "body", [{"type": "xml"}, {"type": "json_schema"}, {"type": "json_schema", "json_schema": {"schema": []}}, "json"]
)
def test_bad_response_format_shapes_are_value_errors(body):
    with pytest.raises(ValueError, match="response_format"):
        StructuredOutput.from_response_format(body)


@pytest.mark.parametrize(
    "schema, construct",
    [
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
        ({"not": {"type": "string"}}, "not"),
        ({"type": "strin"}, "strin"),
        ({"$ref": "http://example.com/s.json"}, "http://example.com/s.json"),
    ],
)
def test_validate_names_the_unsupported_construct(schema, construct):
    with pytest.raises(ValueError, match=construct):
        StructuredOutput("json_schema", json.dumps(schema)).validate()


def test_supported_grammars_validate():
    StructuredOutput("json_object").validate()
    StructuredOutput("regex", "[0-9]+").validate()
    StructuredOutput("lark", 'start: "<tool_call>\\n" %json{"type": "object"} "\\n</tool_call>"').validate()


@pytest.mark.parametrize("kind, spec", [("yaml", ""), ("json_schema", "{not json"), ("regex", "")])
def test_bad_kind_or_spec_is_refused_on_construction(kind, spec):
    with pytest.raises(ValueError):
        StructuredOutput(kind, spec)


def test_from_openai_maps_logit_bias_and_response_format():
    params = SamplingParams.from_openai({"logit_bias": {"7": 2, "3": -1.5}, "response_format": {"type": "json_object"}})
    assert params.logit_bias == ((3, -1.5), (7, 2.0))
    assert params.structured_output == StructuredOutput("json_object")
    arrays = params.to_arrays(0, default_seed=1)
    assert arrays.structured and arrays.logit_bias == ((3, -1.5), (7, 2.0))


@pytest.mark.parametrize(
    "bias, fragment",
    [({"x": 1}, "token ids"), ({1: 100.5}, r"\[-100.0, 100.0\]"), ({i: 1 for i in range(301)}, "at most 300")],
)
def test_bad_logit_bias_names_the_field(bias, fragment):
    with pytest.raises(FieldRangeError, match=fragment) as caught:
        SamplingParams(logit_bias=bias)
    assert caught.value.field == "logit_bias"
