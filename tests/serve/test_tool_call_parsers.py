"""Tool-call extractors (serve/tool_calls): calls and content out of a reply's text, whole or fed in pieces."""

from __future__ import annotations

import json

import pytest

from trellis_jax.serve.tool_calls.calls import ToolCall, collect, extract
from trellis_jax.serve.tool_calls.hermes import HermesExtractor
from trellis_jax.serve.tool_calls.llama3_json import Llama3JsonExtractor


def hermes_call(name: str, **arguments) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def fed_in_pieces(extractor, text: str, size: int):
    pieces = []
    for at in range(0, len(text), size):
        pieces += extractor.feed(text[at : at + size])
    return collect(pieces + extractor.finish())


def shape(extracted):
    return extracted.content, [(c.name, json.loads(c.arguments)) for c in extracted.calls]


def test_hermes_one_call_has_no_content():
    found = extract(HermesExtractor(), hermes_call("get_weather", city="Paris"))
    assert shape(found) == (None, [("get_weather", {"city": "Paris"})])


def test_hermes_several_calls_in_order():
    text = hermes_call("a", x=1) + "\n" + hermes_call("b", y=[1, 2]) + "\n"
    assert shape(extract(HermesExtractor(), text))[1] == [("a", {"x": 1}), ("b", {"y": [1, 2]})]


def test_hermes_text_around_calls_is_content_without_the_separating_whitespace():
    text = "Let me check.\n" + hermes_call("a") + "\nDone, see above."
    assert shape(extract(HermesExtractor(), text)) == ("Let me check.Done, see above.", [("a", {})])


def test_hermes_reply_without_calls_is_unchanged():
    text = "  plain answer with <b>tags</b> and a trailing newline\n"
    assert shape(extract(HermesExtractor(), text)) == (text, [])


def test_hermes_malformed_json_stays_content():
    text = 'ok <tool_call>\n{"name": "a", "arguments": {oops}\n</tool_call>'
    assert shape(extract(HermesExtractor(), text)) == (text, [])


def test_hermes_body_without_a_name_stays_content():
    text = '<tool_call>{"arguments": {}}</tool_call>'
    assert shape(extract(HermesExtractor(), text)) == (text, [])


def test_hermes_list_body_gives_one_call_per_item():
    text = '<tool_call>[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"k": 2}}]</tool_call>'
    assert shape(extract(HermesExtractor(), text))[1] == [("a", {}), ("b", {"k": 2})]


def test_hermes_arguments_given_as_a_json_string_are_decoded():
    text = '<tool_call>{"name": "a", "arguments": "{\\"k\\": 1}"}</tool_call>'
    assert shape(extract(HermesExtractor(), text))[1] == [("a", {"k": 1})]


def test_hermes_unclosed_call_with_whole_json_counts():
    text = '<tool_call>\n{"name": "a", "arguments": {"k": 1}}\n'
    assert shape(extract(HermesExtractor(), text)) == (None, [("a", {"k": 1})])


def test_hermes_cut_off_call_stays_content():
    text = 'Sure <tool_call>\n{"name": "a", "argu'
    assert shape(extract(HermesExtractor(), text)) == (text, [])


@pytest.mark.parametrize("size", [1, 2, 3, 7, 11])
def test_hermes_pieces_give_the_same_result_as_the_whole(size):
    text = " Hi <tool_ca there.\n" + hermes_call("a", q="</tool") + "\n\n" + hermes_call("b") + " bye \n"
    whole = extract(HermesExtractor(), text)
    assert shape(fed_in_pieces(HermesExtractor(), text, size)) == shape(whole)
    assert shape(whole) == (" Hi <tool_ca there.bye", [("a", {"q": "</tool"}), ("b", {})])


def test_hermes_holds_back_a_possible_tag_start():
    extractor = HermesExtractor()
    assert extractor.feed("Hi <tool_") == ["Hi"]
    assert extractor.feed("x") == [" <tool_x"]


def test_call_ids_are_unique():
    calls = extract(HermesExtractor(), hermes_call("a") + hermes_call("a")).calls
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)


def test_tool_call_json_is_openai_shaped():
    call = ToolCall("f", '{"x": 1}', id="call_1")
    assert call.as_json() == {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}


def test_llama3_json_object_is_a_call():
    text = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
    assert shape(extract(Llama3JsonExtractor(), text)) == (None, [("get_weather", {"city": "Paris"})])


def test_llama3_json_after_python_tag_and_several_calls():
    text = '<|python_tag|>{"name": "a", "parameters": {"s": "x; y"}}; {"name": "b", "arguments": {}}'
    assert shape(extract(Llama3JsonExtractor(), text))[1] == [("a", {"s": "x; y"}), ("b", {})]


def test_llama3_json_plain_text_streams_at_once():
    extractor = Llama3JsonExtractor()
    assert extractor.feed("  The weather") == ["  The weather"]
    assert extractor.feed(" is {fine}") == [" is {fine}"]
    assert extractor.finish() == []


def test_llama3_json_that_is_not_a_call_stays_content():
    text = '{"answer": 42}'
    assert shape(extract(Llama3JsonExtractor(), text)) == (text, [])


def test_llama3_json_malformed_stays_content():
    text = '{"name": "a", "parameters": {'
    assert shape(extract(Llama3JsonExtractor(), text)) == (text, [])


@pytest.mark.parametrize("size", [1, 4, 9])
def test_llama3_json_pieces_give_the_same_result_as_the_whole(size):
    text = '\n{"name": "a", "parameters": {"k": [1, 2]}}'
    assert shape(fed_in_pieces(Llama3JsonExtractor(), text, size)) == shape(extract(Llama3JsonExtractor(), text))
