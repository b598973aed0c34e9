"""response_format and logit_bias over HTTP with the official openai client, on the tiny random Llama.

The model writes noise at temperature 0.8: every reply parsing and conforming is the grammar at work.
"""

from __future__ import annotations

import json
import pathlib

import openai
import pytest
from serve_harness import ServerThread

from trellis_jax.engine.api import AsyncEngine
from trellis_jax.serve.app import ServerSettings, create_app
from trellis_testing.schema_check import problems
from trellis_testing.schemas import varied_schemas

pytestmark = pytest.mark.slow

MODEL = "tiny"
TINY = pathlib.Path(__file__).parents[1] / "fixtures" / "tiny_llama"
CHAT = [{"role": "user", "content": "Describe an item."}]
SCHEMAS = [
    {
        "type": "object",
        "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 999}, "ok": {"type": "boolean"}},
        "required": ["id", "ok"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "kind": {"enum": ["tool", "part", "kit"]},
            "sizes": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 9}, "maxItems": 4},
            "meta": {
                "type": "object",
                "properties": {"code": {"type": "string", "maxLength": 4}, "x": {"type": "null"}},
                "required": ["code", "x"],
                "additionalProperties": False,
            },
        },
        "required": ["kind", "sizes", "meta"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"pick": {"anyOf": [{"type": "boolean"}, {"enum": ["a", "b"]}]}},
        "required": ["pick"],
        "additionalProperties": False,
    },
]


@pytest.fixture(scope="module")
def server():
    engine = AsyncEngine.from_options(
        str(TINY), max_num_seqs=4, max_num_batched_tokens=64, max_model_len=1024, compile_cache_dir=None
    )
    with ServerThread(create_app(engine, ServerSettings(model_name=MODEL))) as thread:
        yield thread
    engine.shutdown()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def json_schema(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "item", "schema": schema, "strict": True}}


@pytest.mark.parametrize("index", range(len(SCHEMAS)))
@pytest.mark.parametrize("seed", [1, 2])
def test_chat_json_schema_replies_parse_and_conform(client, index, seed):
    r = client.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        temperature=0.8,
        seed=seed,
        max_tokens=120,
        response_format=json_schema(SCHEMAS[index]),
    )
    choice = r.choices[0]
    assert choice.finish_reason == "stop"
    assert problems(json.loads(choice.message.content), SCHEMAS[index]) == []


def test_n_choices_each_conform(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        temperature=0.8,
        seed=7,
        n=2,
        max_tokens=120,
        response_format=json_schema(SCHEMAS[1]),
    )
    assert len(r.choices) == 2
    assert all(problems(json.loads(c.message.content), SCHEMAS[1]) == [] for c in r.choices)


def test_streamed_deltas_reassemble_the_non_streamed_reply(client):
    request = dict(
        model=MODEL, messages=CHAT, temperature=0.8, seed=3, max_tokens=120, response_format=json_schema(SCHEMAS[1])
    )
    whole = client.chat.completions.create(**request).choices[0].message.content
    chunks = client.chat.completions.create(stream=True, **request)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole


def test_completions_endpoint_takes_response_format(client):
    r = client.completions.create(
        model=MODEL,
        prompt="Item:",
        temperature=0.8,
        seed=4,
        max_tokens=120,
        extra_body={"response_format": json_schema(SCHEMAS[0])},
    )
    assert problems(json.loads(r.choices[0].text), SCHEMAS[0]) == []


def test_guided_choice_picks_one_of_the_choices(client):
    r = client.completions.create(
        model=MODEL,
        prompt="Pick:",
        temperature=1.0,
        seed=5,
        max_tokens=20,
        extra_body={"guided_choice": ["red", "blue"]},
    )
    assert r.choices[0].text in ("red", "blue")


def test_logit_bias_forces_a_token(client):
    r = client.completions.create(
        model=MODEL, prompt="Hi", temperature=1.0, seed=6, max_tokens=3, logit_bias={"77": 100}, logprobs=0
    )
    assert r.usage.completion_tokens == 3
    assert len(set(r.choices[0].logprobs.tokens)) == 1


def test_unsupported_schema_construct_is_a_400_naming_it(client):
    with pytest.raises(openai.BadRequestError, match="uniqueItems"):
        client.chat.completions.create(
            model=MODEL, messages=CHAT, response_format=json_schema({"type": "array", "uniqueItems": True})
        )


def test_fifty_varied_schemas_all_parse_and_conform(client):
    failures = []
    for i, schema in enumerate(varied_schemas(50, seed=1)):
        r = client.chat.completions.create(
            model=MODEL, messages=CHAT, temperature=0.8, seed=i, max_tokens=200, response_format=json_schema(schema)
        )
        choice = r.choices[0]
        try:
            found = problems(json.loads(choice.message.content), schema)
        except json.JSONDecodeError as error:
            found = [f"{choice.finish_reason}: {error}"]
        if found:
            failures.append((i, found))
    assert failures == []


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer", "maximum": 7}},
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_named_tool_choice_always_yields_a_parsing_call(client, seed):
    r = client.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        temperature=1.0,
        seed=seed,
        max_tokens=120,
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert problems(json.loads(call.function.arguments), WEATHER["function"]["parameters"]) == []


def test_required_tool_choice_streams_calls_to_offered_tools(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        temperature=1.0,
        seed=4,
        max_tokens=160,
        tools=[WEATHER, CLOCK],
        tool_choice="required",
        parallel_tool_calls=False,
        stream=True,
    )
    names, arguments, finish = {}, {}, None
    for chunk in stream:
        choice = chunk.choices[0] if chunk.choices else None
        if choice is None:
            continue
        for call in choice.delta.tool_calls or []:
            if call.function.name:
                names[call.index] = call.function.name
            arguments[call.index] = arguments.get(call.index, "") + (call.function.arguments or "")
        finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert names and set(names.values()) <= {"get_weather", "get_time"}
    for index, name in names.items():
        assert isinstance(json.loads(arguments[index]), dict), name
