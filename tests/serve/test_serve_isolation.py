"""One bad request never disturbs the others: with 8 greedy streams in flight on the real tiny model, a
request whose values the step cannot carry is answered 4xx, and every stream completes exactly as it
does alone (issue 18: top_k = 2**31 overflowed int32 while packing and every stream got a 500). The
fuzzer sends hostile bodies (request_strategies.py) while the streams run."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from request_strategies import chat_bodies, completion_bodies, edge_cases, encode
from serve_harness import engine_idle, wait_until
from victims import MODEL_NAME, Victims, solo_texts, tiny_model_server

pytestmark = pytest.mark.slow

NUM_VICTIMS = 8
FUZZ_EXAMPLES = 40  # random bodies, after the explicit edge cases (request_strategies.edge_cases)


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
        response = httpx.post(
            tiny_server.url + "/v1/completions",
            timeout=60,
            json={"model": MODEL_NAME, "prompt": "hello", "max_tokens": 4, "top_k": 2**31},
        )
        assert victims.wait_runs(1)
    assert response.status_code == 400, response.text
    assert "top_k" in response.json()["error"]["message"]
    assert victims.disturbed(solo) == []


def send(url: str, path: str, body: dict) -> tuple[int, list[dict]]:
    """(status, error objects: the body's, or each error event of a stream)."""
    headers = {"content-type": "application/json"}
    with httpx.stream("POST", url + path, content=encode(body), headers=headers, timeout=120) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            events = [
                json.loads(line[6:])
                for line in response.iter_lines()
                if line.startswith("data: ") and line != "data: [DONE]"
            ]
            return response.status_code, [event["error"] for event in events if "error" in event]
        response.read()
        body = response.json() if response.content else {}
        return response.status_code, [body["error"]] if isinstance(body, dict) and "error" in body else []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"model": MODEL_NAME, "prompt": "a\ud800b", "max_tokens": 1}),
        (
            "/v1/chat/completions",
            {"model": MODEL_NAME, "messages": [{"role": "user", "content": "\ud800"}], "max_tokens": 1},
        ),
    ],
)
def test_lone_surrogate_text_is_not_a_5xx(tiny_server, path, body):
    assert send(tiny_server.url, path, body)[0] < 500


def test_fuzzed_requests_get_no_5xx_and_disturb_no_stream(tiny_server, solo):
    """Hostile completions and chat bodies (request_strategies.py) while 8 greedy streams run: no 5xx
    (no server_error event in a stream either), every error is OpenAI-shaped, every stream equals its
    solo run, and the engine ends idle with its cache intact."""
    seen = []

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        st.one_of(
            st.tuples(st.just("/v1/completions"), completion_bodies(MODEL_NAME)),
            st.tuples(st.just("/v1/chat/completions"), chat_bodies(MODEL_NAME)),
        )
    )
    def fuzz(case):
        path, body = case
        status, errors = send(tiny_server.url, path, body)
        seen.append(status)
        assert status < 500, (status, errors, body)
        assert all(e.get("message") and e.get("type") != "server_error" for e in errors), (errors, body)

    for case in edge_cases(MODEL_NAME):
        fuzz = example(case)(fuzz)
    with Victims(tiny_server.url, NUM_VICTIMS) as victims:
        fuzz()
    assert victims.disturbed(solo) == []
    assert all(runs for runs in victims.runs)
    assert 200 in seen and 400 in seen  # the fuzz reached both the engine and the validation
    engine = tiny_server.server.config.app.state.engine
    assert wait_until(lambda: engine_idle(engine))
    engine.engine.scheduler.kv.cache.check_integrity()
