"""A minimal asyncio HTTP/1.1 client for the router's calls to workers, on h11 (uvicorn's own HTTP/1.1
parser, so the router needs no further dependency).

`Upstream.open(worker address, method, path, headers, body)` connects, sends the request and reads the
response head; the body is then read chunk by chunk as it arrives (`next_chunk`) so a stream passes
through unchanged, or whole (`read_all`). One connection per request (`Connection: close`): loopback and
LAN connects are cheap next to a generation, and a worker's death then fails exactly the requests on it.
Every network failure (refused, reset, closed early, timeout, malformed HTTP) is an `UpstreamError`.
"""

from __future__ import annotations

import asyncio

import h11

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"}
)
_READ_BYTES = 65536


class UpstreamError(Exception):
    """The worker could not be reached, or it broke the connection or the protocol."""


class Upstream:
    def __init__(self, reader, writer, conn: h11.Connection, response: h11.Response, read_timeout_s: float):
        self._reader, self._writer, self._conn = reader, writer, conn
        self.status = response.status_code
        self.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers]
        self._read_timeout_s = read_timeout_s

    @classmethod
    async def open(
        cls,
        address: tuple[str, int],
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes = b"",
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 600.0,
    ) -> Upstream:
        host, port = address
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), connect_timeout_s)
        except (OSError, TimeoutError) as error:
            raise UpstreamError(f"cannot connect to {host}:{port}: {error or type(error).__name__}") from error
        conn = h11.Connection(h11.CLIENT)
        sent = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
        head = [("host", f"{host}:{port}"), ("connection", "close"), ("content-length", str(len(body))), *sent]
        try:
            writer.write(conn.send(h11.Request(method=method, target=path, headers=head)))
            if body:
                writer.write(conn.send(h11.Data(data=body)))
            writer.write(conn.send(h11.EndOfMessage()))
            await asyncio.wait_for(writer.drain(), connect_timeout_s)
            upstream = cls(reader, writer, conn, await cls._head(reader, conn, read_timeout_s), read_timeout_s)
        except BaseException as error:
            writer.close()
            if isinstance(error, (OSError, TimeoutError, h11.ProtocolError)):
                raise UpstreamError(
                    f"{host}:{port} failed before answering: {error or type(error).__name__}"
                ) from error
            raise
        return upstream

    @staticmethod
    async def _head(reader, conn: h11.Connection, timeout_s: float) -> h11.Response:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await asyncio.wait_for(reader.read(_READ_BYTES), timeout_s))
            elif isinstance(event, h11.Response):
                return event
            elif isinstance(event, h11.ConnectionClosed):
                raise OSError("connection closed before a response")
            # h11.InformationalResponse (100 Continue): keep reading

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body as it arrived; None at its end. UpstreamError if it breaks first."""
        try:
            while True:
                event = self._conn.next_event()
                if event is h11.NEED_DATA:
                    data = await asyncio.wait_for(self._reader.read(_READ_BYTES), self._read_timeout_s)
                    self._conn.receive_data(data)
                elif isinstance(event, h11.Data):
                    if event.data:
                        return bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    return None
                elif isinstance(event, h11.ConnectionClosed):
                    raise OSError("connection closed before the end of the body")
        except (OSError, TimeoutError, h11.ProtocolError) as error:
            raise UpstreamError(f"the worker broke off its answer: {error or type(error).__name__}") from error

    async def read_all(self) -> bytes:
        parts = []
        while (chunk := await self.next_chunk()) is not None:
            parts.append(chunk)
        return b"".join(parts)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def close(self) -> None:
        self._writer.close()
