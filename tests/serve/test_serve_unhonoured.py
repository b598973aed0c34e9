"""Nothing a client sends is silently dropped: undeclared fields are a 400 naming them, unless they have no
effect on the reply. Over HTTP on the fake engine (no model needed)."""

from __future__ import annotations

import httpx
import pytest

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
COMPLETION = {"model": "fake-model", "prompt": "hi", "max_tokens": 2}


@pytest.fixture
def post(fake_server):
    def post(path, body):
        return httpx.post(fake_server.url + path, json=body, timeout=30)

    return post


@pytest.mark.parametrize("path,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
def test_a_misspelt_field_is_a_400_naming_it(post, path, body):
    r = post(path, {**body, "temprature": 0.5})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "temprature"
    assert "Unrecognized request argument" in r.json()["error"]["message"]


@pytest.mark.parametrize("field,value", [("functions", [{"name": "f"}]), ("audio", {"voice": "x"}), ("min_tokens", 3)])
def test_a_known_unimplemented_field_is_a_400_saying_what_to_send(post, field, value):
    r = post("/v1/chat/completions", {**CHAT, field: value})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == field and field in error["message"]


@pytest.mark.parametrize(
    "field,value",
    [
        ("metadata", {"k": "v"}),
        ("store", False),
        ("service_tier", "auto"),
        ("modalities", ["text"]),
        ("prompt_cache_key", "a"),
    ],
)
def test_fields_without_effect_are_accepted(post, field, value):
    assert post("/v1/chat/completions", {**CHAT, field: value}).status_code == 200


@pytest.mark.parametrize("field,value", [("store", True), ("service_tier", "flex"), ("modalities", ["text", "audio"])])
def test_no_effect_fields_with_an_effect_asked_are_a_400(post, field, value):
    r = post("/v1/chat/completions", {**CHAT, field: value})
    assert (r.status_code, r.json()["error"]["param"]) == (400, field)
