"""The router's ASGI app (Starlette, as under the server's FastAPI).

    POST /v1/chat/completions, /v1/completions  routed by the policy (proxy.py)
    GET  /v1/models, /v1/models/{id}; POST /tokenize, /detokenize   to any healthy worker, least loaded
    POST /flush_cache   to every healthy worker (the caller's key decides what each flushes); pages summed
    GET  /health    200 {"status": "ok", "workers": {url: healthy}} while a worker is routable, else 503
    GET  /metrics   the router's Prometheus text (routing, matches, retries, health; not the workers')
    GET | POST | DELETE /admin/workers   list / add / remove workers: body {"url": "http://HOST:PORT"};
                    needs 'Authorization: Bearer <admin key>' (403 when the router has no --admin-key)

Bodies larger than `max_body_bytes` get 413 before anything is forwarded; an unknown route 404, a wrong
method 405 (with `Allow`), both as OpenAI error JSON. The health checks start with
the app and stop with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

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


def _error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse(error_json(status, message, code), status_code=status)


def create_app(settings: RouterSettings, tokenizer=None) -> Starlette:
    keys = KeyMaker(tokenizer)
    block_size = settings.block_size or (16 if tokenizer is not None else 64)
    index = PrefixIndex(block_size, settings.max_index_blocks)
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

    async def read_body(request: Request) -> bytes | None:
        parts, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                return None
            parts.append(chunk)
        return b"".join(parts)

    def forwarder(routed: bool):
        async def forward(request: Request) -> Response:
            body = await read_body(request)
            if body is None:
                return _error(413, f"the request body is larger than {settings.max_body_bytes} bytes", "body_too_large")
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return await proxy.forward(request.method, target, request.headers, body, routed=routed)

        return forward

    async def flush_cache(request: Request) -> Response:
        body = await read_body(request)
        if body is None:
            return _error(413, f"the request body is larger than {settings.max_body_bytes} bytes", "body_too_large")
        return await proxy.broadcast("POST", "/flush_cache", request.headers, body)

    async def health(request: Request) -> Response:
        workers = {w.url: w.healthy for w in pool.all}
        ok = any(workers.values())
        return JSONResponse({"status": "ok" if ok else "no_healthy_worker", "workers": workers}, 200 if ok else 503)

    async def metrics_route(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def admin_workers(request: Request) -> Response:
        refused = _admin_refusal(request, settings.admin_keys)
        if refused is not None:
            return refused
        if request.method == "GET":
            return JSONResponse({"workers": [_describe(w, index) for w in pool.all]})
        url = await _url_of(request)
        if isinstance(url, Response):
            return url
        try:
            if request.method == "POST":
                worker = pool.add(url)
                return JSONResponse({"added": worker.url, "workers": [w.url for w in pool.all]})
            removed = pool.remove(url)
        except ValueError as error:
            return _error(400, str(error), "invalid_worker_url")
        if removed is None:
            return _error(404, f"{url} is not a worker of this router", "worker_not_found")
        index.forget(removed.url)
        return JSONResponse({"removed": removed.url, "workers": [w.url for w in pool.all]})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(checker.run_forever())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    routes = [
        Route("/v1/chat/completions", forwarder(True), methods=["POST"]),
        Route("/v1/completions", forwarder(True), methods=["POST"]),
        Route("/v1/models", forwarder(False), methods=["GET"]),
        Route("/v1/models/{model:path}", forwarder(False), methods=["GET"]),
        Route("/tokenize", forwarder(False), methods=["POST"]),
        Route("/detokenize", forwarder(False), methods=["POST"]),
        Route("/flush_cache", flush_cache, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics_route, methods=["GET"]),
        Route("/admin/workers", admin_workers, methods=["GET", "POST", "DELETE"]),
    ]
    handlers = {404: _http_error, 405: _http_error}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.pool, app.state.index, app.state.policy, app.state.checker = pool, index, policy, checker
    return app


async def _http_error(request: Request, error) -> Response:
    """Unknown route (404) or method (405, with `Allow`) in the servers' error shape, not Starlette's text."""
    message = (
        f"no route {request.method} {request.url.path} on the router" if error.status_code == 404 else error.detail
    )
    code = "not_found" if error.status_code == 404 else "method_not_allowed"
    return JSONResponse(error_json(error.status_code, message, code), error.status_code, headers=error.headers)


def _admin_refusal(request: Request, admin_keys: tuple[str, ...]) -> Response | None:
    if not admin_keys:
        return _error(403, "worker administration is off: start the router with --admin-key", "admin_disabled")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    presented = token.strip().encode()
    matched = False
    for key in admin_keys:  # compare against every key: timing tells nothing
        matched |= hmac.compare_digest(presented, key.encode())
    if scheme.lower() != "bearer" or not matched:
        return JSONResponse(
            error_json(401, "this route needs 'Authorization: Bearer <admin key>'", "invalid_api_key"),
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return None


async def _url_of(request: Request) -> str | Response:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return _error(400, 'the body must be JSON: {"url": "http://HOST:PORT"}', "invalid_json")
    url = body.get("url") if isinstance(body, dict) else None
    if not isinstance(url, str):
        url = request.query_params.get("url")
    if not url:
        return _error(400, 'name the worker: {"url": "http://HOST:PORT"} (or ?url=)', "missing_url")
    return url


def _describe(worker, index: PrefixIndex) -> dict:
    return {
        "url": worker.url,
        "healthy": worker.healthy,
        "in_flight": worker.in_flight,
        "index_blocks": index.size(worker.url),
    }
