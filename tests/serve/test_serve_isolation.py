"""One bad request never disturbs the others: with 8 greedy streams in flight on the real tiny model, a
request whose values the step cannot carry is answered 4xx, and every stream completes exactly as it
does alone (issue 18: top_k = 2**31 overflowed int32 while packing and every stream got a 500)."""

from __future__ import annotations

import httpx
import pytest
from victims import MODEL_NAME, Victims, solo_texts, tiny_model_server

pytestmark = pytest.mark.slow

NUM_VICTIMS = 8


@pytest.fixture(scope="module")
def tiny_server():
    server, engine = tiny_model_server()
    with server:
        yield server
    engine.shutdown()


@pytest.fixture(scope="module")
def solo(tiny_server):
    return solo_texts(tiny_server.url, NUM_VICTIMS)


def test_top_k_past_int32_is_a_400_and_disturbs_no_stream(tiny_server, solo):
    with Victims(tiny_server.url, NUM_VICTIMS) as victims:
        response = httpx.post(tiny_server.url + "/v1/completions", timeout=60, json={
            "model": MODEL_NAME, "prompt": "hello", "max_tokens": 4, "top_k": 2**31})
        assert victims.wait_runs(1)
    assert response.status_code == 400, response.text
    assert "top_k" in response.json()["error"]["message"]
    assert victims.disturbed(solo) == []
