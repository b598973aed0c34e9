"""Bad requests get an OpenAI-style error JSON with a 4xx and a message that says what to fix."""

from __future__ import annotations

import httpx
import pytest

MODEL = "fake-model"


def post(server, path, **kwargs):
    return httpx.post(server.url + path, timeout=30, **kwargs)


def assert_error(response, status, *fragments, param=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for fragment in fragments:
        assert fragment in error["message"], error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def test_malformed_json(fake_server):
    r = post(fake_server, "/v1/completions", content=b'{"model": ', headers={"content-type": "application/json"})
    assert assert_error(r, 400, "not valid JSON")["type"] == "invalid_request_error"


def test_body_not_an_object(fake_server):
    r = post(fake_server, "/v1/chat/completions", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert_error(r, 400, "must be a JSON object")


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("temperature", "hot", "valid number"),
        ("temperature", -1, "greater than or equal to 0"),
        ("max_tokens", -5, "greater than or equal to 1"),
        ("max_tokens", 1.5, "valid integer"),
        ("n", 10_000, "less than or equal to 16"),
        ("top_p", 0, "greater than 0"),
        ("stream", "yes", "valid boolean"),
        ("stop", [""], "non-empty"),
        ("logit_bias", {"1": 500}, "[-100.0, 100.0]"),
        ("logit_bias", {"x": 1}, "token ids"),
        ("logit_bias", {"999": 1}, "outside the vocabulary"),
        ("logit_bias", {str(i): 1 for i in range(301)}, "at most 300"),
        ("response_format", {"type": "xml"}, "json_schema"),
        (
            "response_format",
            {"type": "json_schema", "json_schema": {"schema": {"type": "array", "uniqueItems": True}}},
            "uniqueItems",
        ),
        ("response_format", {"type": "json_schema", "json_schema": {"schema": {"type": "object", "if": {}}}}, '"if"'),
        ("guided_regex", "[a-", "unclosed character class"),
        ("seed", "42", "valid integer"),
    ],
)
def test_bad_field_values_name_the_field(fake_server, field, value, fragment):
    r = post(fake_server, "/v1/completions", json={"model": MODEL, "prompt": "hi", field: value})
    assert_error(r, 400, fragment, param=field)


def test_missing_required_field(fake_server):
    assert_error(post(fake_server, "/v1/completions", json={"model": MODEL}), 400, "prompt: Field required")


def test_malformed_messages(fake_server):
    r = post(fake_server, "/v1/chat/completions", json={"model": MODEL, "messages": [{"content": "hi"}]})
    assert_error(r, 400, "messages[0].role", param="messages[0].role")
    r = post(fake_server, "/v1/chat/completions", json={"model": MODEL, "messages": []})
    assert_error(r, 400, "messages")


def test_token_id_outside_vocabulary(fake_server):
    r = post(fake_server, "/v1/completions", json={"model": MODEL, "prompt": [1, 99999]})
    assert_error(r, 400, "outside the vocabulary")


def test_unknown_model_is_404(fake_server):
    error = assert_error(
        post(fake_server, "/v1/completions", json={"model": "gpt-5", "prompt": "hi"}), 404, "fake-model"
    )
    assert error["code"] == "model_not_found"


def test_prompt_longer_than_context(fake_server):
    r = post(fake_server, "/v1/completions", json={"model": MODEL, "prompt": "x" * 400})
    assert assert_error(r, 400, "400 tokens", "context is 256")["code"] == "context_length_exceeded"


def test_max_tokens_is_capped_by_the_context(fake_server):
    r = post(
        fake_server,
        "/v1/completions",
        json={"model": MODEL, "prompt": "x" * 250, "max_tokens": 1000, "temperature": 0, "ignore_eos": True},
    )
    assert r.status_code == 200
    assert r.json()["usage"]["completion_tokens"] <= 6


def test_declared_body_over_the_limit_is_413(fake_server):
    r = post(fake_server, "/v1/completions", content=b"x" * (5 * 2**20), headers={"content-type": "application/json"})
    assert_error(r, 413, "limit of 4194304 bytes")


def test_chunked_body_over_the_limit_is_413(fake_server):
    def chunks():
        for _ in range(6):
            yield b"x" * 2**20

    assert_error(post(fake_server, "/v1/completions", content=chunks()), 413, "limit")


def test_unknown_route_and_wrong_method(fake_server):
    assert_error(httpx.get(fake_server.url + "/v1/nothing"), 404, "no route")
    assert_error(httpx.get(fake_server.url + "/v1/completions"), 405, "not allowed")


def test_unsupported_features_are_refused_not_ignored(fake_server):
    for field, value in (("suffix", "end"), ("best_of", 3)):
        r = post(fake_server, "/v1/completions", json={"model": MODEL, "prompt": "hi", field: value})
        assert_error(r, 400, "not supported", param=field)


def test_echo_with_logprobs_is_refused_naming_the_combination(fake_server):
    r = post(fake_server, "/v1/completions", json={"model": MODEL, "prompt": "hi", "echo": True, "logprobs": 1})
    assert_error(r, 400, "echo with logprobs is not supported", param="echo")


def test_too_many_completions_in_one_request(fake_server):
    r = post(fake_server, "/v1/completions", json={"model": MODEL, "prompt": ["a"] * 10, "n": 16})
    assert_error(r, 400, "160 completions", param="prompt")


def test_a_failed_flush_is_a_500_naming_it_and_the_server_keeps_serving(fake_server, fake_engine_of, monkeypatch):
    def broken(namespace=None):
        raise AssertionError("integrity check failed")

    monkeypatch.setattr(fake_engine_of.engine, "flush_cache", broken)
    r = fake_server.post("/flush_cache")
    assert r.status_code == 500 and "flush_cache failed (AssertionError)" in r.json()["error"]["message"]
    monkeypatch.undo()
    assert fake_server.post("/flush_cache").status_code == 200
