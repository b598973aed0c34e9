"""Backpressure: a burst past the request cap gets 429 (never a 5xx); /health answers 503 while the model
loads and every route answers once it is ready."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from serve_harness import ServerThread, fake_engine, wait_until

from trellis_jax.serve.admission import Admission, default_max_waiting
from trellis_jax.serve.app import ServerSettings, create_app
from trellis_jax.serve.startup import LoadingApp

SLOW = {"model": "fake-model", "prompt": "a", "max_tokens": 4, "ignore_eos": True}


async def _burst(url: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await asyncio.gather(*(client.post("/v1/completions", json=SLOW) for _ in range(count)))


def test_a_burst_past_the_cap_gets_429_for_the_excess_and_no_5xx():
    engine = fake_engine(step_s=0.3, max_num_seqs=2)  # 4 tokens: >= 1.2 s in flight, the burst lands well before
    app = create_app(engine, ServerSettings(model_name="fake-model", max_waiting_requests=3))
    with ServerThread(app) as server:
        statuses = sorted(r.status_code for r in asyncio.run(_burst(server.url, 9)))
        after = server.post("/v1/completions", json={**SLOW, "max_tokens": 1}).status_code
    engine.shutdown()
    assert statuses == [200] * 5 + [429] * 4
    assert after == 200  # finished requests gave their slots back


def test_a_429_says_when_to_retry_in_an_openai_rate_limit_error():
    engine = fake_engine(step_s=0.3, max_num_seqs=1)
    app = create_app(engine, ServerSettings(model_name="fake-model", max_waiting_requests=0))
    with ServerThread(app) as server:
        refused = next(r for r in asyncio.run(_burst(server.url, 3)) if r.status_code == 429)
    engine.shutdown()
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"


def test_streams_hold_a_slot_until_they_end():
    engine = fake_engine(max_num_seqs=1)
    app = create_app(engine, ServerSettings(model_name="fake-model", max_waiting_requests=0))
    with ServerThread(app) as server:
        for _ in range(3):  # one slot in all: each finished stream must have released it
            r = server.post("/v1/completions", json={**SLOW, "stream": True})
            assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
        assert wait_until(lambda: app.state.admission.in_flight == 0)
    engine.shutdown()


def test_admission_refuses_past_running_plus_waiting_and_counts_refusals():
    admission = Admission(max_running=2, max_waiting=1)
    slots = [admission.acquire() for _ in range(3)]
    with pytest.raises(Exception, match="at capacity") as refused:
        admission.acquire()
    assert refused.value.status == 429 and admission.rejected == 1 and admission.in_flight == 3
    slots[0].release()
    slots[0].release()  # a second release of the same slot gives nothing back twice
    assert admission.in_flight == 2


def test_a_stream_the_client_leaves_at_once_gives_its_slot_back():
    engine = fake_engine(step_s=0.05, max_num_seqs=1)
    app = create_app(engine, ServerSettings(model_name="fake-model", max_waiting_requests=0))
    with ServerThread(app) as server:
        for _ in range(3):
            with httpx.stream(
                "POST", server.url + "/v1/completions", json={**SLOW, "stream": True, "max_tokens": 50}, timeout=30
            ) as r:
                assert r.status_code == 200  # leaves without reading the body
            assert wait_until(lambda: app.state.admission.in_flight == 0)
    engine.shutdown()


def test_default_queue_holds_the_pools_quarter_context_requests_and_at_least_a_batch():
    assert default_max_waiting(max_num_seqs=8, pool_tokens=16384, max_model_len=1024) == 64
    assert default_max_waiting(max_num_seqs=32, pool_tokens=1024, max_model_len=4096) == 32


def test_a_negative_queue_is_refused_at_start_up():
    with pytest.raises(ValueError, match="max_waiting_requests"):
        ServerSettings(max_waiting_requests=-1)


def _slow_load(release: threading.Event, engine):
    def build():
        release.wait(30)
        return create_app(engine, ServerSettings(model_name="fake-model"))

    return build


def test_health_is_503_while_the_model_loads_then_200():
    engine, release = fake_engine(), threading.Event()
    gate = LoadingApp("fake-model")
    with ServerThread(gate) as server:
        gate.load_in_background(_slow_load(release, engine))
        loading = server.get("/health")
        release.set()
        assert wait_until(lambda: gate.ready)
        ready = server.get("/health")
    assert (loading.status_code, loading.json()["status"]) == (503, "loading")
    assert ready.status_code == 200
    assert not engine.is_running  # the gate ran the app's shutdown: the engine thread stopped


def test_every_route_answers_503_with_an_openai_error_while_loading():
    release = threading.Event()
    gate = LoadingApp("fake-model")
    with ServerThread(gate) as server:
        gate.load_in_background(_slow_load(release, fake_engine()))
        r = server.post("/v1/chat/completions", json={"model": "fake-model", "messages": []})
        release.set()
    assert r.status_code == 503 and "retry-after" in r.headers
    assert r.json()["error"]["code"] == "model_loading"


def test_a_failed_load_keeps_answering_503_and_reports_the_error():
    failures = []

    def broken():
        raise RuntimeError("no such checkpoint")

    gate = LoadingApp("fake-model")
    with ServerThread(gate) as server:
        gate.load_in_background(broken, on_failure=failures.append).join(10)
        health, other = server.get("/health"), server.get("/v1/models")
    assert health.status_code == 503 and health.json()["status"] == "failed"
    assert other.json()["error"]["code"] == "load_failed"
    assert [type(e) for e in failures] == [RuntimeError]


def test_the_server_exits_with_an_error_when_its_model_cannot_load(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trellis_jax.serve",
            "--model",
            str(tmp_path / "missing.gguf"),
            "--port",
            "0",
            "--log-level",
            "critical",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "loading failed" in done.stderr and "missing.gguf" in done.stderr
