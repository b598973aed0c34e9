"""Fake workers and a router, each a real uvicorn server on a loopback port in a daemon thread.

A fake worker answers the generation routes with a reply naming itself (`{"worker": name, "prompt": ...}`),
or, with `"stream": true`, with SSE events `data: {"worker": name, "i": k}` for k < 3 then `data: [DONE]`.
Its behaviour is switched per test: `healthy` (GET /health 200 or 503), `status` (answer every generation
request with this error status), `die_after` (a stream raises after that many events: the connection
is cut mid-body), `event_delay_s` (pause between stream events). Every generation request it receives is appended to `received`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from trellis_jax.router.app import RouterSettings, create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    def __init__(self, app, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.server.config.install_signal_handlers = False
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class FakeWorker(ServerThread):
    def __init__(self, name: str, port: int | None = None):
        self.name = name
        self.healthy = True
        self.status: int | None = None
        self.die_after: int | None = None
        self.event_delay_s = 0.01
        self.received: list[dict] = []
        routes = [
            Route("/v1/chat/completions", self._generate, methods=["POST"]),
            Route("/v1/completions", self._generate, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/health", self._health, methods=["GET"]),
            Route("/flush_cache", self._flush, methods=["POST"]),
        ]
        super().__init__(Starlette(routes=routes), port)

    async def _health(self, request: Request):
        return JSONResponse({"status": "ok" if self.healthy else "loading"}, 200 if self.healthy else 503)

    async def _flush(self, request: Request):
        if self.status is not None:
            return JSONResponse({"error": {"message": f"{self.name} refuses"}}, self.status)
        return JSONResponse({"flushed_pages": 3})

    async def _models(self, request: Request):
        return JSONResponse({"object": "list", "data": [{"id": "fake", "owned_by": self.name}]})

    async def _generate(self, request: Request):
        body = json.loads(await request.body())
        self.received.append({**body, "authorization": request.headers.get("authorization")})
        if self.status is not None:
            error = {"error": {"message": f"{self.name} refuses", "type": "x", "param": None, "code": None}}
            return JSONResponse(error, self.status, headers={"Retry-After": "7"})
        if not body.get("stream"):
            return JSONResponse({"worker": self.name, "usage": {"prompt_tokens": 3, "cached_tokens": 1}})
        return StreamingResponse(self._events(), media_type="text/event-stream")

    async def _events(self):
        for i in range(3):
            if self.die_after is not None and i >= self.die_after:
                raise RuntimeError("worker dies mid-stream")
            yield f"data: {json.dumps({'worker': self.name, 'i': i})}\n\n".encode()
            await asyncio.sleep(self.event_delay_s)
        yield b"data: [DONE]\n\n"


def start_router(urls: list[str], **settings) -> ServerThread:
    options = {"health_interval_s": 0.1, "health_timeout_s": 1.0, "connect_timeout_s": 1.0, **settings}
    return ServerThread(create_app(RouterSettings(workers=tuple(urls), **options))).start()


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
