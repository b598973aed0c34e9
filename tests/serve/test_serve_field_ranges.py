"""Values the step cannot carry are a 400 naming the field and its range (field_ranges.FIELD_RANGES),
never a 500: ints past int32 / uint32, floats that are not finite or overflow float32."""

from __future__ import annotations

import json

import httpx
import pytest

MODEL = "fake-model"
CHAT = [{"role": "user", "content": "hi"}]


def post_raw(server, path: str, body: dict) -> httpx.Response:
    """json.dumps keeps NaN / Infinity (as Python's json does), which httpx's encoder refuses."""
    return httpx.post(
        server.url + path, content=json.dumps(body).encode(), timeout=30, headers={"content-type": "application/json"}
    )


@pytest.mark.parametrize(
    ("field", "value", "range_text"),
    [
        ("top_k", 2**31, "[-1, 2147483647]"),
        ("top_k", 2**63, "[-1, 2147483647]"),
        ("seed", 2**32, "[0, 4294967295]"),
        ("seed", -1, "[0, 4294967295]"),
        ("max_tokens", 2**31, "[1, 2147483647]"),
        ("max_tokens", 2**63, "[1, 2147483647]"),
    ],
)
def test_completions_int_past_its_wire_dtype_is_a_400(fake_server, field, value, range_text):
    r = post_raw(fake_server, "/v1/completions", {"model": MODEL, "prompt": "abc", field: value})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["message"].startswith(f"{field} must be an integer in {range_text}")
    assert error["param"] == field


def test_stop_token_id_past_int32_is_a_400(fake_server):
    r = post_raw(fake_server, "/v1/completions", {"model": MODEL, "prompt": "abc", "stop_token_ids": [2, 2**31]})
    assert r.status_code == 400, r.text
    assert "stop_token_ids must be an integer in [0, 2147483647]" in r.json()["error"]["message"]


def test_chat_max_completion_tokens_past_int32_is_a_400(fake_server):
    r = post_raw(
        fake_server, "/v1/chat/completions", {"model": MODEL, "messages": CHAT, "max_completion_tokens": 2**40}
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "max_tokens"


@pytest.mark.parametrize("value", [2**31, 2**63, 10**30])
def test_token_prompt_past_the_vocabulary_is_a_400(fake_server, value):
    r = post_raw(fake_server, "/v1/completions", {"model": MODEL, "prompt": [97, value]})
    assert r.status_code == 400, r.text
    assert "outside the vocabulary" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "field", ["temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty"]
)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e39])
def test_non_finite_float_knobs_are_a_400(fake_server, field, value):
    r = post_raw(fake_server, "/v1/chat/completions", {"model": MODEL, "messages": CHAT, field: value})
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]["message"]
