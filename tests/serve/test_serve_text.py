"""Text that is not valid Unicode is a 400 naming the field on every text-taking endpoint and field, and
special-token text in chat content is counted as text tokens."""

from __future__ import annotations

import json

import httpx
import pytest

from trellis_jax.engine.config import EngineConfig
from trellis_jax.serve.__main__ import engine_options, parse_args

MODEL = "fake-model"


def post_raw(server, path: str, body: bytes):
    """Posts `body` as is: a lone surrogate must travel as the JSON escape \\ud800 (httpx would refuse the str)."""
    return httpx.post(server.url + path, content=body, headers={"content-type": "application/json"}, timeout=30)


def with_surrogate(body: dict) -> bytes:
    """`body` as JSON where the marker string "SURROGATE" becomes a lone-surrogate escape."""
    return json.dumps(body).replace("SURROGATE", "a\\ud800b").encode()


def assert_invalid_text(response, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert "U+D800" in error["message"] and "valid Unicode" in error["message"]


def test_lone_surrogate_in_chat_content_is_a_400(fake_server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "SURROGATE"}], "max_tokens": 2}
    assert_invalid_text(post_raw(fake_server, "/v1/chat/completions", with_surrogate(body)), "messages[0].content")


def test_lone_surrogate_in_chat_text_part_is_a_400(fake_server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": "SURROGATE"}]}]}
    assert_invalid_text(
        post_raw(fake_server, "/v1/chat/completions", with_surrogate(body)), "messages[0].content[0].text"
    )


def test_lone_surrogate_in_completions_prompt_is_a_400(fake_server):
    r = post_raw(fake_server, "/v1/completions", with_surrogate({"model": MODEL, "prompt": "SURROGATE"}))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "prompt"


@pytest.mark.parametrize(
    "path, prompt",
    [
        ("/v1/completions", {"prompt": "hi"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ],
)
def test_lone_surrogate_in_a_stop_string_is_a_400(fake_server, path, prompt):
    r = post_raw(fake_server, path, with_surrogate({"model": MODEL, **prompt, "stop": ["ok", "SURROGATE"]}))
    assert_invalid_text(r, "stop[1]")


def test_body_that_is_not_utf8_is_a_400_saying_so(fake_server):
    r = post_raw(fake_server, "/v1/completions", b'{"model": "fake-model", "prompt": "a\xff\xfeb"}')
    assert r.status_code == 400, r.text
    assert "not valid UTF-8" in r.json()["error"]["message"]


def test_server_keeps_serving_after_invalid_text(fake_server):
    post_raw(
        fake_server,
        "/v1/chat/completions",
        with_surrogate({"model": MODEL, "messages": [{"role": "user", "content": "SURROGATE"}]}),
    )
    r = httpx.post(
        fake_server.url + "/v1/completions",
        json={"model": MODEL, "prompt": "a", "max_tokens": 2, "temperature": 0},
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "bc"


def prompt_tokens(server, content: str) -> int:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 1}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["usage"]["prompt_tokens"]


def test_special_token_text_in_chat_content_counts_as_text_tokens(fake_server):
    # the fake tokenizer: one token per byte, "</s>" one special token where it is parsed
    assert prompt_tokens(fake_server, "</s>") == prompt_tokens(fake_server, "abcd")


def test_allow_special_tokens_in_content_flag_reaches_the_engine_config():
    assert engine_options(parse_args([]))["allow_special_tokens_in_content"] is False
    options = engine_options(parse_args(["--allow-special-tokens-in-content"]))
    assert EngineConfig.from_options(**options).allow_special_tokens_in_content is True
