"""The router over HTTP in front of fake workers: pass-through, retries, failures, membership, metrics."""

import json

import httpx
import pytest
from router_harness import FakeWorker, free_port, start_router, wait_until

SYSTEM = "You are the assistant of tenant zero. Answer briefly and politely. " * 3


def ask(router, question, *, stream=False, key=None, salt=None, system=SYSTEM):
    body = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}
    if stream:
        body["stream"] = True
    if salt:
        body["cache_salt"] = salt
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(router.url + "/v1/chat/completions", json=body, headers=headers, timeout=10)


@pytest.fixture
def workers():
    started = [FakeWorker(f"w{i}").start() for i in range(3)]
    yield started
    for w in started:
        w.stop()


@pytest.fixture
def router(workers):
    r = start_router([w.url for w in workers])
    yield r
    r.stop()


def test_same_prefix_requests_reach_one_worker(router, workers):
    answered = {ask(router, f"question {q}").json()["worker"] for q in range(6)}
    assert len(answered) == 1


def test_round_robin_spreads_them(workers):
    router = start_router([w.url for w in workers], policy="round_robin")
    try:
        assert len({ask(router, f"question {q}").json()["worker"] for q in range(6)}) == 3
    finally:
        router.stop()


def test_different_api_keys_do_not_share_a_worker_by_prefix(router, workers):
    first = ask(router, "q", key="k1").json()["worker"]
    assert ask(router, "q", key="k2").json()["worker"] != first  # no match: the next idle, smallest worker


def test_the_workers_headers_and_key_reach_it(router, workers):
    ask(router, "q", key="secret")
    assert [r["authorization"] for w in workers for r in w.received] == ["Bearer secret"]


def test_a_stream_passes_through_byte_for_byte(router, workers):
    with httpx.stream("POST", router.url + "/v1/chat/completions", json={"messages": [], "stream": True}) as r:
        body = b"".join(r.iter_raw())
        assert r.headers["content-type"].startswith("text/event-stream")
    name = json.loads(body.split(b"\n\n")[0][len(b"data: ") :])["worker"]
    expected = b"".join(f"data: {json.dumps({'worker': name, 'i': i})}\n\n".encode() for i in range(3))
    assert body == expected + b"data: [DONE]\n\n"


def test_a_workers_error_passes_through_with_its_status_and_headers(router, workers):
    for w in workers:
        w.status = 429
    r = ask(router, "q")
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json()["error"]["message"].endswith("refuses")


def test_a_request_to_a_dead_worker_is_retried_on_another(workers):
    dead = f"http://127.0.0.1:{free_port()}"
    router = start_router([dead] + [w.url for w in workers], health_interval_s=60)
    try:
        answers = [ask(router, f"q{i}", system=f"system {i} " * 20) for i in range(4)]
        assert [r.status_code for r in answers] == [200] * 4
        assert router.server.config.app.state.pool.get(dead).healthy is False
    finally:
        router.stop()


def test_a_503_from_a_loading_worker_is_retried_on_another(router, workers):
    workers[0].status = 503
    assert all(ask(router, f"q{i}", system=f"system {i} " * 20).status_code == 200 for i in range(4))


def test_a_stream_cut_mid_way_ends_with_an_error_event_then_done(router, workers):
    for w in workers:
        w.die_after = 1
    with httpx.stream("POST", router.url + "/v1/chat/completions", json={"messages": [], "stream": True}) as r:
        events = [e for e in b"".join(r.iter_raw()).split(b"\n\n") if e]
    assert json.loads(events[0][6:])["i"] == 0
    assert "error" in json.loads(events[1][6:]) and events[2] == b"data: [DONE]" and len(events) == 3


def test_a_client_that_hangs_up_mid_stream_frees_its_slot_on_the_worker(router, workers):
    pool = router.server.config.app.state.pool
    for w in workers:
        w.event_delay_s = 2.0
    with httpx.stream("POST", router.url + "/v1/chat/completions", json={"messages": [], "stream": True}) as r:
        chunks = r.iter_raw()  # held: a discarded iterator would close the response at once
        next(chunks)
        assert sum(w.in_flight for w in pool.all) == 1
    assert wait_until(lambda: sum(w.in_flight for w in pool.all) == 0, timeout=3)  # the stream had 4 s left


def test_no_healthy_worker_is_a_503(workers):
    router = start_router([f"http://127.0.0.1:{free_port()}"], health_interval_s=60)
    try:
        r = ask(router, "q")
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_healthy_worker"
    finally:
        router.stop()


def test_a_failed_worker_leaves_routing_and_rejoins_when_it_recovers(router, workers):
    pool = router.server.config.app.state.pool
    workers[1].healthy = False
    assert wait_until(lambda: not pool.get(workers[1].url).healthy)
    workers[1].healthy = True
    assert wait_until(lambda: pool.get(workers[1].url).healthy)


def test_a_killed_worker_rejoins_when_restarted_on_its_port(router, workers):
    pool = router.server.config.app.state.pool
    port = workers[0].port
    workers[0].stop()
    assert wait_until(lambda: not pool.get(workers[0].url).healthy)
    with FakeWorker("w0-again", port=port):
        assert wait_until(lambda: pool.get(workers[0].url).healthy)


def test_admin_adds_and_removes_workers(workers):
    router = start_router([workers[0].url], admin_keys=("adm",))
    auth = {"Authorization": "Bearer adm"}
    try:
        added = httpx.post(router.url + "/admin/workers", json={"url": workers[1].url}, headers=auth)
        assert added.status_code == 200 and workers[1].url in added.json()["workers"]
        removed = httpx.request("DELETE", router.url + "/admin/workers", json={"url": workers[0].url}, headers=auth)
        assert removed.json()["workers"] == [workers[1].url]
        assert ask(router, "q").json()["worker"] == "w1"
    finally:
        router.stop()


def test_admin_needs_the_admin_key(workers):
    router = start_router([workers[0].url], admin_keys=("adm",))
    try:
        r = httpx.post(
            router.url + "/admin/workers", json={"url": workers[1].url}, headers={"Authorization": "Bearer x"}
        )
        assert r.status_code == 401
    finally:
        router.stop()


def test_admin_is_off_without_an_admin_key(router, workers):
    assert httpx.get(router.url + "/admin/workers").status_code == 403


def test_admin_refuses_a_bad_worker_url(workers):
    router = start_router([workers[0].url], admin_keys=("adm",))
    try:
        r = httpx.post(router.url + "/admin/workers", json={"url": "ftp://x"}, headers={"Authorization": "Bearer adm"})
        assert r.status_code == 400 and "http://HOST:PORT" in r.json()["error"]["message"]
    finally:
        router.stop()


def test_models_come_from_a_worker(router, workers):
    assert httpx.get(router.url + "/v1/models").json()["data"][0]["id"] == "fake"


def test_health_lists_the_workers(router, workers):
    r = httpx.get(router.url + "/health")
    assert r.status_code == 200 and set(r.json()["workers"]) == {w.url for w in workers}


def test_metrics_count_decisions_and_matched_characters(router, workers):
    for q in range(3):
        ask(router, f"question {q}")
    text = httpx.get(router.url + "/metrics").text
    assert 'reason="cache_hit"' in text and "trellis_router_matched_elements_total" in text
    assert "trellis_router_worker_healthy" in text and "trellis_router_imbalance" in text


def test_a_body_over_the_cap_is_413(workers):
    router = start_router([workers[0].url], max_body_bytes=100)
    try:
        assert ask(router, "x" * 200).status_code == 413
        assert workers[0].received == []
    finally:
        router.stop()


def test_an_unknown_route_is_a_404_in_the_openai_error_shape(router, workers):
    r = httpx.post(router.url + "/v1/embeddings", json={})
    assert r.status_code == 404 and "/v1/embeddings" in r.json()["error"]["message"]


def test_a_wrong_method_is_a_405_naming_the_allowed_one(router, workers):
    r = httpx.get(router.url + "/v1/chat/completions")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"]["code"] == "method_not_allowed"


def test_flush_cache_reaches_every_worker_and_sums_their_pages(router, workers):
    r = httpx.post(router.url + "/flush_cache")
    assert r.status_code == 200 and r.json()["flushed_pages"] == 9 and len(r.json()["workers"]) == 3


def test_flush_cache_passes_a_workers_refusal_through(router, workers):
    workers[1].status = 401
    assert httpx.post(router.url + "/flush_cache").status_code == 401
