"""ASGI middleware that caps request bodies (HTTP 413 with OpenAI error JSON).

A declared Content-Length over the cap is refused before the body is read; a chunked body is counted
as it arrives and refused as soon as it crosses the cap, so a huge upload never sits in memory.
"""

from __future__ import annotations

import json

from trellis_jax.serve.errors import error_body


class BodyTooLarge(Exception):
    """Raised from `receive` when a chunked body crosses the cap; the app maps it to 413."""

    def __init__(self, max_bytes: int):
        super().__init__(f"request body exceeds the server's limit of {max_bytes} bytes")


class BodySizeLimit:
    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._refuse(send)
        received = 0
        started = False

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send):
        body = json.dumps(error_body(413, f"request body exceeds the server's limit of {self.max_bytes} bytes")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
