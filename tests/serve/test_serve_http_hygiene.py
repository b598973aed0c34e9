"""HTTP hygiene: slow bodies cut off (408), a connection cap (503), `Allow` on 405, and an OpenAPI document
that lists the statuses the app really answers (no 422; /metrics as text/plain)."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
from serve_harness import ServerThread, fake_engine, serve_fake, wait_until

from trellis_jax.serve.app import ServerSettings, create_app

KEY = "hygiene-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
TIMEOUT_S = 1.0
MAX_BODY = 4096
OK_COMPLETION = {"model": "fake-model", "prompt": "abc", "max_tokens": 2}


@pytest.fixture(scope="module")
def server():
    server, engine = serve_fake(api_keys=(KEY,), body_read_timeout_s=TIMEOUT_S, max_body_bytes=MAX_BODY)
    with server:
        yield server
    engine.shutdown()


def raw_connection(server) -> socket.socket:
    host, port = server.sock.getsockname()[:2]
    return socket.create_connection((host, port), timeout=10)


def trickle_post(server, path: str, declared: int, byte_every_s: float) -> tuple[bytes, float]:
    """POST whose body arrives one byte every `byte_every_s`; -> (everything the server sent, seconds until
    the server closed the connection)."""
    conn = raw_connection(server)
    conn.sendall(
        f"POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n".encode()
    )
    start, stop = time.monotonic(), threading.Event()

    def drip():
        for _ in range(declared):
            if stop.wait(byte_every_s):
                return
            try:
                conn.sendall(b" ")
            except OSError:
                return

    threading.Thread(target=drip, daemon=True).start()
    received = b""
    try:
        while chunk := conn.recv(4096):
            received += chunk
    except ConnectionResetError:
        # The server closed with our unread drip bytes in its buffer, which makes its kernel send a reset
        # once they arrive; what it answered before that is already in `received`.
        pass
    finally:
        stop.set()
        conn.close()
    return received, time.monotonic() - start


def test_a_body_trickling_in_is_cut_off_at_the_read_timeout(server):
    received, elapsed = trickle_post(server, "/v1/completions", declared=200, byte_every_s=0.1)
    assert received.startswith(b"HTTP/1.1 408")
    assert b"body read timeout" in received or b"not received within" in received
    assert elapsed < TIMEOUT_S + 2  # closed at the deadline, not after the 20 s the body would take


def test_a_route_that_ignores_its_body_answers_and_closes_instead_of_waiting_for_it(server):
    received, elapsed = trickle_post(server, "/flush_cache", declared=200, byte_every_s=0.1)
    assert received.startswith(b"HTTP/1.1 200") and b"connection: close" in received.lower()
    assert elapsed < TIMEOUT_S + 2


def test_a_request_whose_body_was_read_keeps_its_connection(server):
    with httpx.Client(headers=AUTH) as client:
        r = client.post(server.url + "/v1/completions", json=OK_COMPLETION)
    assert r.status_code == 200 and r.headers.get("connection", "").lower() != "close"


def test_a_body_that_arrives_within_the_timeout_is_served(server):
    body = b'{"model": "fake-model", "prompt": "abc", "max_tokens": 2}'
    received, _ = trickle_post_complete(server, body)
    assert received.startswith(b"HTTP/1.1 200")


def trickle_post_complete(server, body: bytes) -> tuple[bytes, float]:
    conn = raw_connection(server)
    start = time.monotonic()
    conn.sendall(
        f"POST /v1/completions HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    for i in range(0, len(body), 16):  # in pieces over ~0.1 s: slow, but well within the timeout
        conn.sendall(body[i : i + 16])
        time.sleep(0.02)
    received = b""
    while chunk := conn.recv(4096):
        received += chunk
    conn.close()
    return received, time.monotonic() - start


def test_a_generation_longer_than_the_read_timeout_still_completes():
    engine = fake_engine(step_s=0.05)  # 30 tokens: ~1.5 s, past the 1 s body deadline
    with ServerThread(create_app(engine, ServerSettings(model_name="fake-model", body_read_timeout_s=TIMEOUT_S))) as s:
        r = s.post("/v1/completions", json={**OK_COMPLETION, "max_tokens": 30, "ignore_eos": True})
    engine.shutdown()
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 30


def test_a_read_timeout_that_is_not_positive_is_refused_at_start_up():
    with pytest.raises(ValueError, match="body_read_timeout_s"):
        ServerSettings(body_read_timeout_s=0)


def test_past_the_connection_cap_new_requests_get_503():
    engine = fake_engine()
    with ServerThread(create_app(engine, ServerSettings(model_name="fake-model")), limit_concurrency=2) as s:
        idle = raw_connection(s)  # holds one of the two places
        assert wait_until(lambda: len(s.server.server_state.connections) == 1)
        refused = s.get("/health").status_code
        idle.close()
        assert wait_until(lambda: not s.server.server_state.connections)
        served = s.get("/health").status_code
    engine.shutdown()
    assert (refused, served) == (503, 200)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/flush_cache", "POST"),
        ("POST", "/health", "GET"),
        ("DELETE", "/v1/completions", "POST"),
    ],
)
def test_405_names_the_allowed_methods(server, method, path, allowed):
    r = httpx.request(method, server.url + path, headers=AUTH)
    assert r.status_code == 405 and allowed in r.headers["allow"].split(", ")


def documented(server) -> dict:
    return httpx.get(server.url + "/openapi.json", headers=AUTH).json()


def test_the_schema_documents_no_422_anywhere(server):
    schema = documented(server)
    assert all("422" not in op["responses"] for ops in schema["paths"].values() for op in ops.values())
    assert "HTTPValidationError" not in str(schema)


def test_metrics_are_text_plain_in_the_schema_and_on_the_wire(server):
    content = documented(server)["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]
    assert httpx.get(server.url + "/metrics", headers=AUTH).headers["content-type"].startswith("text/plain")


PROBES = [  # (method, path, request options, the status the app answers)
    ("post", "/v1/completions", {"json": OK_COMPLETION}, 200),
    ("post", "/v1/completions", {"json": OK_COMPLETION, "headers": {}}, 401),
    ("post", "/v1/completions", {"content": b"{not json"}, 400),
    ("post", "/v1/completions", {"json": {**OK_COMPLETION, "max_tokens": -1}}, 400),
    ("post", "/v1/completions", {"json": {**OK_COMPLETION, "model": "other"}}, 404),
    ("post", "/v1/completions", {"json": {**OK_COMPLETION, "prompt": "x" * MAX_BODY}}, 413),
    ("post", "/v1/chat/completions", {"json": {"model": "fake-model"}}, 400),
    ("post", "/v1/chat/completions", {"json": {"model": "other", "messages": []}, "headers": {}}, 401),
    ("get", "/v1/models", {}, 200),
    ("get", "/v1/models", {"headers": {}}, 401),
    ("get", "/v1/models/other", {}, 404),
    ("post", "/flush_cache", {}, 200),
    ("post", "/flush_cache", {"headers": {}}, 401),
    ("get", "/metrics", {"headers": {}}, 401),
    ("get", "/health", {"headers": {}}, 200),
]


@pytest.mark.parametrize(("method", "path", "options", "status"), PROBES)
def test_every_status_the_app_answers_is_documented_for_its_route(server, method, path, options, status):
    options = {"headers": AUTH, **options}
    assert httpx.request(method.upper(), server.url + path, timeout=30, **options).status_code == status
    route = "/v1/models/{model_id}" if path.startswith("/v1/models/") else path
    assert str(status) in documented(server)["paths"][route][method]["responses"]


def test_the_read_timeout_status_is_documented_for_generation_routes(server):
    for path in ("/v1/completions", "/v1/chat/completions"):
        assert "408" in documented(server)["paths"][path]["post"]["responses"]
