"""The router's ASGI app (Starlette, as under the server's FastAPI).

    POST /v1/chat/completions, /v1/completions  routed by the policy (proxy.py)
    GET  /v1/models, /v1/models/{id}; POST /tokenize, /detokenize   to any healthy worker, least loaded
    POST /flush_cache   to every healthy worker (the caller's key decides what each flushes); pages summed
    GET  /health    200 {"status": "ok", "workers": {url: healthy}} while a worker is routable, else 503
    GET  /metrics   the router's Prometheus text (routing, matches, retries, health; not the workers')
    GET | POST | DELETE /admin/workers   list / add / remove workers (admin.py): body {"url": "http://HOST:PORT"};
                    needs 'Authorization: Bearer <admin key>' (403 when the router has no --admin-key)

Bodies larger than `max_body_bytes` get 413 before anything is forwarded; an unknown route 404, a wrong
method 405 (with `Allow`), both as OpenAI error JSON. The health checks start with
the app and stop with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trellis_jax.router.admin import AdminWorkers, error_response
from trellis_jax.router.health import HealthChecker
from trellis_jax.router.keys import KeyMaker
from trellis_jax.router.metrics import RouterMetrics
from trellis_jax.router.policy import Policy
from trellis_jax.router.prefix_index import PrefixIndex
from trellis_jax.router.proxy import Proxy, error_json
from trellis_jax.router.workers import WorkerPool


@dataclass(frozen=True)
class RouterSettings:
    workers: tuple[str, ...] = ()
    policy: str = "cache_aware"
    cache_threshold: float = 0.5
    imbalance_threshold: int = 8
    block_size: int | None = None  # None: 16 tokens, or 64 characters without a tokenizer
    max_index_blocks: int = 100_000  # per worker
    admin_keys: tuple[str, ...] = ()
    health_interval_s: float = 2.0
    health_timeout_s: float = 2.0
    failures_to_drop: int = 2  # failed health checks in a row (a failed request drops a worker at once)
    max_attempts: int = 3
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 600.0
    max_body_bytes: int = 4 * 2**20
    workers_file: str | None = None


@dataclass(frozen=True)
class RouterParts:
    """What the routes work with, built once per app from the settings."""

    keys: KeyMaker
    index: PrefixIndex
    pool: WorkerPool
    policy: Policy
    metrics: RouterMetrics
    proxy: Proxy
    checker: HealthChecker


def create_app(settings: RouterSettings, tokenizer=None) -> Starlette:
    parts = build_parts(settings, tokenizer)
    handlers = {404: _http_error, 405: _http_error}
    app = Starlette(routes=_routes(settings, parts), lifespan=_lifespan(parts.checker), exception_handlers=handlers)
    for name in ("pool", "index", "policy", "checker"):  # what tests and the CLI look at
        setattr(app.state, name, getattr(parts, name))
    return app


def build_parts(settings: RouterSettings, tokenizer=None) -> RouterParts:
    keys = KeyMaker(tokenizer)
    index = PrefixIndex(settings.block_size or (16 if tokenizer is not None else 64), settings.max_index_blocks)
    pool = WorkerPool(list(settings.workers), failures_to_drop=settings.failures_to_drop)
    policy = Policy(
        settings.policy,
        index,
        cache_threshold=settings.cache_threshold,
        imbalance_threshold=settings.imbalance_threshold,
    )
    metrics = RouterMetrics(pool, index, keys.unit)
    proxy = Proxy(
        pool,
        policy,
        keys,
        metrics,
        max_attempts=settings.max_attempts,
        connect_timeout_s=settings.connect_timeout_s,
        read_timeout_s=settings.read_timeout_s,
    )
    checker = HealthChecker(
        pool,
        index,
        interval_s=settings.health_interval_s,
        timeout_s=settings.health_timeout_s,
        workers_file=settings.workers_file,
    )
    return RouterParts(keys, index, pool, policy, metrics, proxy, checker)


def _routes(settings: RouterSettings, parts: RouterParts) -> list[Route]:
    forwarding = Forwarding(parts.proxy, settings.max_body_bytes)
    routed, any_worker = forwarding.route(routed=True), forwarding.route(routed=False)
    return [
        Route("/v1/chat/completions", routed, methods=["POST"]),
        Route("/v1/completions", routed, methods=["POST"]),
        Route("/v1/models", any_worker, methods=["GET"]),
        Route("/v1/models/{model:path}", any_worker, methods=["GET"]),
        Route("/tokenize", any_worker, methods=["POST"]),
        Route("/detokenize", any_worker, methods=["POST"]),
        Route("/flush_cache", forwarding.flush_cache, methods=["POST"]),
        Route("/health", _health_route(parts.pool), methods=["GET"]),
        Route("/metrics", _metrics_route(parts.metrics), methods=["GET"]),
        Route(
            "/admin/workers",
            AdminWorkers(parts.pool, parts.index, settings.admin_keys).route,
            methods=["GET", "POST", "DELETE"],
        ),
    ]


class Forwarding:
    """The routes that pass a request on to workers, its body read first (413 past `max_body_bytes`)."""

    def __init__(self, proxy: Proxy, max_body_bytes: int) -> None:
        self.proxy, self.max_body_bytes = proxy, max_body_bytes

    def route(self, routed: bool):
        """To the worker the policy picks (`routed`), else to any healthy worker, least loaded."""

        async def forward(request: Request) -> Response:
            body = await self._body(request)
            if isinstance(body, Response):
                return body
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return await self.proxy.forward(request.method, target, request.headers, body, routed=routed)

        return forward

    async def flush_cache(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        return await self.proxy.broadcast("POST", "/flush_cache", request.headers, body)

    async def _body(self, request: Request) -> bytes | Response:
        parts, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                return error_response(
                    413, f"the request body is larger than {self.max_body_bytes} bytes", "body_too_large"
                )
            parts.append(chunk)
        return b"".join(parts)


def _health_route(pool: WorkerPool):
    async def health(request: Request) -> Response:
        workers = {w.url: w.healthy for w in pool.all}
        ok = any(workers.values())
        return JSONResponse({"status": "ok" if ok else "no_healthy_worker", "workers": workers}, 200 if ok else 503)

    return health


def _metrics_route(metrics: RouterMetrics):
    async def metrics_route(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics_route


def _lifespan(checker: HealthChecker):
    """The health checks run while the app does."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(checker.run_forever())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return lifespan


async def _http_error(request: Request, error) -> Response:
    """Unknown route (404) or method (405, with `Allow`) in the servers' error shape, not Starlette's text."""
    message = (
        f"no route {request.method} {request.url.path} on the router" if error.status_code == 404 else error.detail
    )
    code = "not_found" if error.status_code == 404 else "method_not_allowed"
    return JSONResponse(error_json(error.status_code, message, code), error.status_code, headers=error.headers)
