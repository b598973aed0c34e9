"""Helpers for the server tests: a fake engine with outputs computable by hand, and a real uvicorn
server on a free loopback port running in a background thread.

Fake engine: FakeRunner in "increment" mode over the byte tokenizer, so the completion of a prompt
whose last byte is b is the bytes b+1, b+2, ... (prompt "abc" -> "defg..."), until max_tokens or EOS.
"""

from __future__ import annotations

import threading
import time

import httpx

from trellis_jax.engine.api import AsyncEngine
from trellis_jax.http_server import bind_socket, make_server, url_of
from trellis_jax.serve.app import ServerSettings, create_app
from trellis_testing.fakes import make_fake_engine


def fake_engine(
    *, num_pages: int = 256, page_size: int = 4, max_model_len: int = 256, step_s: float = 0.0, **options
) -> AsyncEngine:
    """`step_s` > 0 makes every engine step take that long (to leave time to disconnect mid-stream)."""
    engine, runner, _cache, tokenizer = make_fake_engine(
        num_pages=num_pages, page_size=page_size, mode="increment", max_model_len=max_model_len, **options
    )
    if step_s:
        run = runner.run

        def slow_run(plan):
            time.sleep(step_s)
            return run(plan)

        runner.run = slow_run
    return AsyncEngine(engine, tokenizer)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def engine_idle(engine: AsyncEngine) -> bool:
    """No request left in the engine or scheduler and no page held (only the tree's evictable pages)."""
    scheduler = engine.engine.scheduler
    cache = scheduler.kv.cache
    return (
        not engine.engine.has_unfinished()
        and not scheduler.requests
        and cache.num_locked_pages == 0
        and cache.num_private_pages == 0
    )


def expected_increment(prompt: str, max_tokens: int) -> str:
    last = prompt.encode()[-1]
    return bytes((last + 1 + i) for i in range(max_tokens) if last + 1 + i < 256).decode("latin-1")


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1:<free port> in a daemon thread (`server_options`: make_server's)."""

    def __init__(self, app, **server_options):
        self.sock = bind_socket("127.0.0.1", 0)
        self.url = url_of(self.sock)
        self.server = make_server(app, graceful_timeout_s=5, log_level="warning", **server_options)
        self.server.config.install_signal_handlers = False
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return httpx.post(self.url + path, timeout=30, **kwargs)


def serve_fake(step_s: float = 0.0, **settings) -> tuple[ServerThread, AsyncEngine]:
    engine = fake_engine(step_s=step_s)
    app = create_app(engine, ServerSettings(model_name="fake-model", **settings))
    return ServerThread(app), engine
