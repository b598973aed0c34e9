"""A client that leaves mid-request aborts it: the engine forgets the request and its pages come back."""

from __future__ import annotations

import httpx
import pytest
from serve_harness import engine_idle, serve_fake, wait_until

BODY = {"model": "fake-model", "prompt": "abcdefghijklmnop", "max_tokens": 200, "temperature": 0, "ignore_eos": True}


@pytest.fixture(scope="module")
def slow_server():
    server, engine = serve_fake(step_s=0.02)  # 200 tokens take ~4 s: plenty of time to leave early
    with server:
        yield server, engine
    engine.shutdown()


def disconnects(server) -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith("trellis_client_disconnects_total{"):
            return float(line.split()[1])
    return 0.0


def test_stream_disconnect_aborts_and_frees_pages(slow_server):
    server, engine = slow_server
    before = disconnects(server)
    with httpx.stream("POST", server.url + "/v1/completions", json={**BODY, "stream": True}, timeout=30) as r:
        lines = r.iter_lines()
        received = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: ") for line in received)
        assert not engine_idle(engine)  # still generating when we hang up
    assert wait_until(lambda: engine_idle(engine), timeout=5)
    engine.engine.scheduler.kv.cache.check_integrity()
    assert wait_until(lambda: disconnects(server) == before + 1, timeout=5)


def test_non_stream_disconnect_aborts(slow_server):
    server, engine = slow_server
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/completions", json=BODY, timeout=httpx.Timeout(30, read=0.5))
    assert wait_until(lambda: engine_idle(engine), timeout=5)
    engine.engine.scheduler.kv.cache.check_integrity()


def test_server_still_serves_after_disconnects(slow_server):
    server, _ = slow_server
    r = httpx.post(server.url + "/v1/completions", json={**BODY, "max_tokens": 3}, timeout=30)
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "qrs"
