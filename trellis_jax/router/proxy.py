"""Forward one request to a worker chosen by the policy, retrying on another while nothing was sent.

    route -> connect + send -> response head -> first body piece   | committed: bytes reach the client
    `------------ any failure here: retry on another worker -------` a failure after: see below

A request moves to another worker (at most `max_attempts` workers in all) when its worker refuses the
connection, breaks it before the first body byte, or answers 502/503 (loading, shutting down, past its
connection cap). A worker that could not be reached leaves routing at once (the health checks bring it
back). Every other answer, errors included (400, 401, 429, 500...), is the client's, passed through with
the worker's status, headers and bytes. A stream (`text/event-stream`) passes through piece by piece as it
arrives, byte for byte; if the worker fails after the first piece, the client gets one SSE event
`data: {"error": {...}}` and `data: [DONE]` (as a server ends a stream that fails mid-way), then the end.
"""

from __future__ import annotations

import asyncio
import json
import logging

from starlette.responses import JSONResponse, Response, StreamingResponse

from trellis_jax.router.keys import KeyMaker
from trellis_jax.router.metrics import RouterMetrics
from trellis_jax.router.policy import Policy
from trellis_jax.router.upstream import HOP_BY_HOP, Upstream, UpstreamError
from trellis_jax.router.workers import Worker, WorkerPool

logger = logging.getLogger(__name__)

RETRY_STATUSES = (502, 503)
FORWARDED_HEADERS = ("authorization", "content-type", "accept", "user-agent", "x-request-id", "openai-organization")


def error_json(status: int, message: str, code: str) -> dict:
    kind = "service_unavailable" if status == 503 else ("server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def stream_error_event(message: str) -> bytes:
    body = error_json(502, message, "worker_failed")
    return b"data: " + json.dumps(body).encode() + b"\n\ndata: [DONE]\n\n"


class Proxy:
    def __init__(
        self,
        pool: WorkerPool,
        policy: Policy,
        keys: KeyMaker,
        metrics: RouterMetrics,
        *,
        max_attempts: int = 3,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 600.0,
    ):
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.pool, self.policy, self.keys, self.metrics = pool, policy, keys, metrics
        self.max_attempts, self.connect_timeout_s, self.read_timeout_s = max_attempts, connect_timeout_s, read_timeout_s

    async def forward(self, method: str, path: str, headers, body: bytes, *, routed: bool) -> Response:
        """Send the request to a worker and return its answer (a StreamingResponse for a stream). `routed`:
        choose by the policy (generation routes); otherwise any healthy worker, least loaded first."""
        sent = [(k, v) for k, v in headers.items() if k.lower() in FORWARDED_HEADERS]
        key = self.keys.key(path, body, headers.get("authorization")) if routed else None
        tried: set[str] = set()
        last = "no healthy worker"
        while len(tried) < self.max_attempts:
            candidates = [w for w in self.pool.healthy if w.url not in tried]
            if not candidates:
                break
            worker = self._choose(key, candidates)
            tried.add(worker.url)
            worker.in_flight += 1
            handed_over = False
            try:
                upstream = await Upstream.open(
                    worker.address,
                    method,
                    path,
                    sent,
                    body,
                    connect_timeout_s=self.connect_timeout_s,
                    read_timeout_s=self.read_timeout_s,
                )
                if upstream.status in RETRY_STATUSES and self._can_retry(tried):
                    upstream.close()
                    last = f"{worker.url} answered {upstream.status}"
                    self.metrics.retries.labels(worker.url).inc()
                    continue
                self.metrics.responses.labels(worker.url, str(upstream.status)).inc()
                first = await upstream.next_chunk()
                if _is_stream(upstream):
                    handed_over = True
                    return self._stream(worker, upstream, first)
                rest = await upstream.read_all() if first is not None else b""
                upstream.close()
                return Response((first or b"") + rest, upstream.status, headers=_passed_headers(upstream))
            except UpstreamError as error:
                last = f"{worker.url}: {error}"
                if self.pool.request_failed(worker):
                    self.policy.index.forget(worker.url)
                    logger.warning("worker %s dropped from routing: %s", worker.url, error)
                self.metrics.retries.labels(worker.url).inc()
            finally:
                if not handed_over:
                    worker.in_flight -= 1
        return JSONResponse(
            error_json(503, f"no worker could take the request ({last})", "no_healthy_worker"),
            status_code=503,
            headers={"Retry-After": "1"},
        )

    async def broadcast(self, method: str, path: str, headers, body: bytes) -> Response:
        """Send the request to every healthy worker at once (POST /flush_cache: a tenant's prefixes live on
        any of them). All 200: `{"flushed_pages": sum, "workers": {url: pages}}`; otherwise the first
        worker's answer that is not 200, as it came (401 for a bad key, ...); no worker reached: 503."""
        sent = [(k, v) for k, v in headers.items() if k.lower() in FORWARDED_HEADERS]
        workers = self.pool.healthy
        answers = await asyncio.gather(*(self._call(w, method, path, sent, body) for w in workers))
        reached = [(w, a) for w, a in zip(workers, answers) if a is not None]
        if not reached:
            return JSONResponse(error_json(503, "no worker could be reached", "no_healthy_worker"), status_code=503)
        for _, (status, passed, content) in reached:
            if status != 200:
                return Response(content, status, headers=passed)
        pages = {w.url: json.loads(content).get("flushed_pages", 0) for w, (_, _, content) in reached}
        return JSONResponse({"flushed_pages": sum(pages.values()), "workers": pages})

    async def _call(self, worker: Worker, method: str, path: str, headers, body: bytes):
        """(status, headers to pass, body) of one whole answer, or None if the worker failed (it is dropped)."""
        try:
            upstream = await Upstream.open(
                worker.address, method, path, headers, body, connect_timeout_s=self.connect_timeout_s
            )
            try:
                content = await asyncio.wait_for(upstream.read_all(), self.read_timeout_s)
            finally:
                upstream.close()
        except (UpstreamError, TimeoutError) as error:
            if self.pool.request_failed(worker):
                self.policy.index.forget(worker.url)
                logger.warning("worker %s dropped from routing: %s", worker.url, error)
            return None
        return upstream.status, _passed_headers(upstream), content

    def _can_retry(self, tried: set[str]) -> bool:
        return len(tried) < self.max_attempts and any(w.url not in tried for w in self.pool.healthy)

    def _choose(self, key, candidates: list[Worker]) -> Worker:
        if key is None:
            return min(candidates, key=lambda w: w.in_flight)
        decision = self.policy.choose(key, candidates)
        self.metrics.routed(self.policy.name, decision, len(key.elements))
        return decision.worker

    def _stream(self, worker: Worker, upstream: Upstream, first: bytes | None) -> StreamingResponse:
        released = False

        def release() -> None:  # once, whether the stream ended, broke, or never started (client gone)
            nonlocal released
            if not released:
                released = True
                upstream.close()
                worker.in_flight -= 1

        async def pieces():
            try:
                chunk = first
                while chunk is not None:
                    yield chunk
                    chunk = await upstream.next_chunk()
            except UpstreamError as error:
                logger.warning("stream from %s cut: %s", worker.url, error)
                self.metrics.stream_errors.labels(worker.url).inc()
                if self.pool.request_failed(worker):
                    self.policy.index.forget(worker.url)
                yield stream_error_event(f"the worker serving this stream failed mid-way ({error}); retry the request")
            finally:
                release()

        return _RelayedStream(pieces(), upstream.status, headers=_passed_headers(upstream), release=release)


class _RelayedStream(StreamingResponse):
    """A StreamingResponse that releases its worker even if its body is never iterated (the client left
    before the response started), which a generator's own `finally` would not see."""

    def __init__(self, content, status_code: int, *, headers, release):
        super().__init__(content, status_code, headers=headers)
        self._release = release

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _is_stream(upstream: Upstream) -> bool:
    return (upstream.header("content-type") or "").startswith("text/event-stream")


def _passed_headers(upstream: Upstream) -> dict[str, str]:
    skip = HOP_BY_HOP | {"content-length", "date", "server"}
    return {k: v for k, v in upstream.headers if k.lower() not in skip}
