"""Tool calls end to end with the official `openai` client: a scripted model (trellis_testing/scripted.py)
writes exactly what the test's last message says after "SAY:", through the real engine and HTTP layer."""

from __future__ import annotations

import json

import openai
import pytest
from serve_harness import ServerThread

from trellis_jax.engine.api import AsyncEngine
from trellis_jax.serve.app import ServerSettings, create_app
from trellis_testing.fakes import ByteTokenizer, make_fake_engine
from trellis_testing.scripted import ScriptedRunner, say_after

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def call_text(name: str, **arguments) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


@pytest.fixture(scope="module")
def scripted_server():
    runner = ScriptedRunner(512, 4, say_after("SAY:"))
    engine, *_ = make_fake_engine(num_pages=512, page_size=4, runner=runner, max_model_len=2048)
    async_engine = AsyncEngine(engine, ByteTokenizer())  # no chat template: tools go through tool_prompt.py
    with ServerThread(create_app(async_engine, ServerSettings(model_name="scripted"))) as server:
        yield server
    async_engine.shutdown()


@pytest.fixture
def client(scripted_server):
    return openai.OpenAI(base_url=scripted_server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def ask(client, said: str, **options):
    messages = options.pop("messages", [{"role": "user", "content": f"SAY:{said}"}])
    return client.chat.completions.create(
        model="scripted", messages=messages, tools=options.pop("tools", [WEATHER, TIME]), **options
    )


def streamed(client, said: str, **options):
    with client.chat.completions.stream(
        model="scripted", messages=[{"role": "user", "content": f"SAY:{said}"}], tools=[WEATHER, TIME], **options
    ) as stream:
        return stream.get_final_completion()


def calls_of(message) -> list[tuple[str, dict]]:
    return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]


def test_a_call_becomes_message_tool_calls(client):
    choice = ask(client, call_text("get_weather", city="Paris")).choices[0]
    assert calls_of(choice.message) == [("get_weather", {"city": "Paris"})]
    assert choice.message.content is None and choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].id.startswith("call_") and choice.message.tool_calls[0].type == "function"


def test_text_around_calls_is_the_content(client):
    said = "Checking both.\n" + call_text("get_weather", city="Oslo") + "\n" + call_text("get_time")
    choice = ask(client, said).choices[0]
    assert choice.message.content == "Checking both."
    assert calls_of(choice.message) == [("get_weather", {"city": "Oslo"}), ("get_time", {})]


def test_malformed_call_is_content_not_an_error(client):
    said = '<tool_call>\n{"name": "get_weather", "arguments": {city}\n</tool_call>'
    choice = ask(client, said).choices[0]
    assert choice.message.content == said and not choice.message.tool_calls and choice.finish_reason == "stop"


def test_tool_choice_none_leaves_calls_as_text(client):
    said = call_text("get_weather", city="Paris")
    choice = ask(client, said, tool_choice="none").choices[0]
    assert choice.message.content == said and not choice.message.tool_calls


def test_a_stream_reassembles_to_the_whole_reply(client):
    said = "On it:\n" + call_text("get_weather", city="Lima") + "\n" + call_text("get_time") + "\n"
    whole = ask(client, said).choices[0]
    final = streamed(client, said).choices[0]
    assert final.message.content == whole.message.content == "On it:"
    assert calls_of(final.message) == calls_of(whole.message) == [("get_weather", {"city": "Lima"}), ("get_time", {})]
    assert final.finish_reason == whole.finish_reason == "tool_calls"


def test_stream_deltas_have_openai_shape(client):
    chunks = list(
        client.chat.completions.create(
            model="scripted",
            messages=[{"role": "user", "content": "SAY:" + call_text("get_time")}],
            tools=[TIME],
            stream=True,
        )
    )
    call_deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    head, rest = call_deltas[0], call_deltas[1:]
    assert (head.index, head.type, head.function.name) == (0, "function", "get_time") and head.id.startswith("call_")
    assert all(d.id is None and d.function.name is None for d in rest)
    assert json.loads("".join(d.function.arguments or "" for d in call_deltas)) == {}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_stream_without_calls_is_plain_content(client):
    final = streamed(client, "just text, no <tool_call here")
    assert final.choices[0].message.content == "just text, no <tool_call here"
    assert not final.choices[0].message.tool_calls and final.choices[0].finish_reason == "stop"


def test_two_turn_tool_conversation(client):
    first = ask(client, call_text("get_weather", city="Rome")).choices[0].message
    history = [
        {"role": "user", "content": "SAY:" + call_text("get_weather", city="Rome")},
        first.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "SAY:It is 21C in Rome."},
    ]
    second = ask(client, "", messages=history).choices[0]
    # the scripted model repeats its prompt's last message: the tool result, as the template-less prompt wraps it
    assert second.message.content == "It is 21C in Rome.\n</tool_response>" and second.finish_reason == "stop"


def test_named_function_not_in_tools_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as error:
        ask(client, "x", tool_choice={"type": "function", "function": {"name": "launch"}})
    assert error.value.body["param"] == "tool_choice"


def test_malformed_tool_is_a_400_naming_the_field(client):
    bad = {"type": "function", "function": {"name": "has space"}}
    with pytest.raises(openai.BadRequestError) as error:
        ask(client, "x", tools=[bad])
    assert error.value.body["param"] == "tools[0].function.name"


def test_tool_choice_without_tools_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "hi"}], tool_choice="required"
        )
    assert error.value.body["param"] == "tool_choice"


def test_each_choice_of_a_stream_has_its_own_calls(client):
    final = streamed(client, call_text("get_weather", city="Kyiv"), n=2)
    assert [calls_of(c.message) for c in final.choices] == [[("get_weather", {"city": "Kyiv"})]] * 2
    assert [c.finish_reason for c in final.choices] == ["tool_calls"] * 2


def test_a_call_cut_off_by_max_tokens_is_content_with_length(client):
    said = call_text("get_weather", city="Paris")
    choice = ask(client, said, max_tokens=20).choices[0]
    assert choice.message.content == said[:20] and choice.finish_reason == "length"


def test_parallel_tool_calls_false_returns_one_call(client):
    said = call_text("get_weather", city="Oslo") + call_text("get_time")
    whole = ask(client, said, parallel_tool_calls=False).choices[0]
    final = streamed(client, said, parallel_tool_calls=False).choices[0]
    assert calls_of(whole.message) == calls_of(final.message) == [("get_weather", {"city": "Oslo"})]


def test_tokenize_renders_tools_as_the_chat_route_does(scripted_server):
    messages = [{"role": "user", "content": "hi"}]
    ids = scripted_server.post("/tokenize", json={"messages": messages, "tools": [WEATHER]}).json()["tokens"]
    said = scripted_server.post("/detokenize", json={"tokens": ids}).json()["prompt"]
    assert (
        said.startswith("<system># Tools")
        and '"name": "get_weather"' in said
        and said.endswith("<user>hi</s><assistant>")
    )


def test_stream_logprobs_cover_every_token_even_held_back_ones(client):
    said = "Hi <tool_x " + call_text("get_time")
    final = streamed(client, said, logprobs=True).choices[0]
    whole = ask(client, said, logprobs=True).choices[0]
    assert [e.token for e in final.logprobs.content] == [e.token for e in whole.logprobs.content]
    assert len(final.logprobs.content) == len(said.encode()) + 1  # a byte token each, and the EOS
    assert final.message.content == "Hi <tool_x"
