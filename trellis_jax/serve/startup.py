"""Serve HTTP while the model loads: `LoadingApp` answers 503 until the real app is ready.

The listening socket accepts connections from the first second; a client that arrives during the
minutes of loading and compiling gets an answer instead of a silent backlog: GET /health answers 503
`{"status": "loading"}` (200 with the real app once ready), every other route a 503 OpenAI error with
`Retry-After`. `load_in_background(build)` runs `build() -> ASGI app` on a daemon thread; once it
returns, every request goes to that app. If it raises, the server keeps answering 503 (the message says
the load failed) and `on_failure(error)` is called, e.g. to stop the server.

Lifespan: the gate answers the server's startup itself; at shutdown it runs the real app's lifespan (its
startup, then its shutdown: the engine thread stops) if the app was ever built.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from fastapi.responses import JSONResponse

from trellis_jax.serve.errors import error_response

logger = logging.getLogger(__name__)

LOADING_RETRY_AFTER_S = 5


class LoadingApp:
    def __init__(self, model_name: str):
        self.model_name = model_name
        self.app = None
        self.error: BaseException | None = None

    @property
    def ready(self) -> bool:
        return self.app is not None

    def load_in_background(
        self, build: Callable[[], object], on_failure: Callable[[BaseException], None] | None = None
    ) -> threading.Thread:
        def load() -> None:
            try:
                self.app = build()
            except BaseException as error:
                self.error = error
                logger.exception("loading the model failed")
                if on_failure is not None:
                    on_failure(error)

        thread = threading.Thread(target=load, name="trellis-load", daemon=True)
        thread.start()
        return thread

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if self.app is not None:
            return await self.app(scope, receive, send)
        if scope["type"] == "http":
            await self._unavailable(scope)(scope, receive, send)

    def _unavailable(self, scope):
        retry = {"Retry-After": str(LOADING_RETRY_AFTER_S)}
        if self.error is not None:
            message, code = f"the model failed to load ({type(self.error).__name__}); see the server log", "load_failed"
        else:
            message, code = f"the model {self.model_name!r} is still loading; retry shortly", "model_loading"
        if scope.get("path") == "/health":
            status = "failed" if self.error is not None else "loading"
            return JSONResponse({"status": status, "model": self.model_name}, status_code=503, headers=retry)
        return error_response(503, message, code=code, headers=retry)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.app is not None:
                    await _run_app_lifespan(self.app)
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _run_app_lifespan(app) -> None:
    """Start and at once stop `app`'s lifespan: what it does at shutdown (stop the engine) runs now."""
    messages = iter(({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}))

    async def receive():
        return next(messages)

    async def send(message) -> None:
        if message["type"].endswith(".failed"):
            logger.error("the app's lifespan failed: %s", message.get("message"))

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
