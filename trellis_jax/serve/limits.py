"""ASGI middleware that bounds request bodies in size (HTTP 413) and in read time (HTTP 408).

Size: a declared Content-Length over the cap is refused before the body is read; a chunked body is
counted as it arrives and refused as soon as it crosses the cap, so a huge upload never sits in memory.
Time: the whole body must arrive within `read_timeout_s` of the request's headers, however it trickles in
(a client sending one byte a second is cut off at the deadline, not kept alive by each byte). Once the
body is complete the deadline no longer applies: later reads only wait for the client to disconnect.
Both refusals carry OpenAI error JSON and `Connection: close` (the rest of the body is never read), as
does any response sent before its request's body was read in full (a route that ignores its body), so a
slow body cannot hold the connection open after its answer.
"""

from __future__ import annotations

import asyncio
import json
import time

from trellis_jax.serve.errors import APIError, error_body

_CLOSE = {"Connection": "close"}


class BodyTooLarge(APIError):
    """Raised from `receive` when a chunked body crosses the cap; answered 413."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"request body exceeds the server's limit of {max_bytes} bytes", headers=_CLOSE)


class BodyTooSlow(APIError):
    """Raised from `receive` when the body is not complete by the deadline; answered 408."""

    def __init__(self, timeout_s: float):
        super().__init__(408, f"request body not received within the server's limit of {timeout_s:g} s", headers=_CLOSE)


class BodyLimits:
    def __init__(self, app, max_bytes: int, read_timeout_s: float):
        if read_timeout_s <= 0:
            raise ValueError(f"body read timeout must be > 0 seconds, got {read_timeout_s!r}")
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _refuse(send, BodyTooLarge(self.max_bytes))
        received = 0
        body_done = declared in (None, b"0") and b"chunked" not in headers.get(b"transfer-encoding", b"").lower()
        deadline = time.monotonic() + self.read_timeout_s
        started = False

        async def bounded_receive():
            nonlocal received, body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise BodyTooSlow(self.read_timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not body_done:
                    message = {**message, "headers": _closing(message.get("headers", []))}
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except (BodyTooLarge, BodyTooSlow) as error:  # read outside FastAPI's body parsing: answer here
            if not started:
                await _refuse(send, error)


def _closing(headers) -> list:
    headers = [(name, value) for name, value in headers if name.lower() != b"connection"]
    return [*headers, (b"connection", b"close")]


async def _refuse(send, error: APIError) -> None:
    body = json.dumps(error_body(error.status, error.message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
