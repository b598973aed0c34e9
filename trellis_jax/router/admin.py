"""The router's /admin/workers route: list, add and remove workers at run time.

    GET     -> {"workers": [{"url", "healthy", "in_flight", "index_blocks"}]}
    POST    body {"url": "http://HOST:PORT"} (or ?url=) -> {"added": url, "workers": [urls]}; 400 for a bad URL
    DELETE  the same body -> {"removed": url, "workers": [urls]}; 404 for a URL that is not a worker; the
            worker's prefix-index entries are forgotten
Every method needs 'Authorization: Bearer <admin key>' (401 otherwise, keys compared in constant time);
403 when the router has no admin key. Errors in the servers' OpenAI error JSON.
"""

from __future__ import annotations

import hmac
import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from trellis_jax.router.prefix_index import PrefixIndex
from trellis_jax.router.proxy import error_json
from trellis_jax.router.workers import WorkerPool


def error_response(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse(error_json(status, message, code), status_code=status)


class AdminWorkers:
    def __init__(self, pool: WorkerPool, index: PrefixIndex, admin_keys: tuple[str, ...]) -> None:
        self.pool, self.index, self.admin_keys = pool, index, admin_keys

    async def route(self, request: Request) -> Response:
        """The endpoint (a method: Starlette takes a callable object for a whole ASGI app)."""
        refused = _refusal(request, self.admin_keys)
        if refused is not None:
            return refused
        if request.method == "GET":
            return JSONResponse({"workers": [_describe(w, self.index) for w in self.pool.all]})
        url = await _url_of(request)
        if isinstance(url, Response):
            return url
        try:
            return self._add(url) if request.method == "POST" else self._remove(url)
        except ValueError as error:
            return error_response(400, str(error), "invalid_worker_url")

    def _add(self, url: str) -> Response:
        worker = self.pool.add(url)
        return JSONResponse({"added": worker.url, "workers": [w.url for w in self.pool.all]})

    def _remove(self, url: str) -> Response:
        removed = self.pool.remove(url)
        if removed is None:
            return error_response(404, f"{url} is not a worker of this router", "worker_not_found")
        self.index.forget(removed.url)
        return JSONResponse({"removed": removed.url, "workers": [w.url for w in self.pool.all]})


def _refusal(request: Request, admin_keys: tuple[str, ...]) -> Response | None:
    if not admin_keys:
        return error_response(403, "worker administration is off: start the router with --admin-key", "admin_disabled")
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
        return error_response(400, 'the body must be JSON: {"url": "http://HOST:PORT"}', "invalid_json")
    url = body.get("url") if isinstance(body, dict) else None
    if not isinstance(url, str):
        url = request.query_params.get("url")
    if not url:
        return error_response(400, 'name the worker: {"url": "http://HOST:PORT"} (or ?url=)', "missing_url")
    return url


def _describe(worker, index: PrefixIndex) -> dict:
    return {
        "url": worker.url,
        "healthy": worker.healthy,
        "in_flight": worker.in_flight,
        "index_blocks": index.size(worker.url),
    }
