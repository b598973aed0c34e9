"""OpenAI-style error JSON: `{"error": {"message", "type", "param", "code"}}` with a 4xx/5xx status.

`APIError` is raised by handlers (and by the body limits, from inside FastAPI's body read);
`install_error_handlers` maps it, pydantic validation errors, malformed JSON and Starlette HTTP errors
(404 route, 405 method with its `Allow` header) onto that shape, and turns anything unexpected into a 500
whose message hides internals (the traceback goes to the log).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
          405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
          503: "service_unavailable"}  # fmt: skip


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = dict(headers or {})
        if status == 401:
            self.headers.setdefault("WWW-Authenticate", "Bearer")


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None, headers=None):
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def api_error_response(error: APIError):
    return error_response(error.status, error.message, error.param, error.code, error.headers or None)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "literal"}


def _param(loc) -> str | None:
    """'messages[0].role' from pydantic's loc, dropping 'body' and union-member tags like 'float'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "body" and not out:
            continue
        elif not part.isidentifier() or part in _TYPE_TAGS:
            break  # a union member's tag ('float', 'list[constrained-int]', ...): the field name is enough
        else:
            out += f".{part}" if out else part
    return out or None


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    problems: dict[str, str] = {}
    depth: dict[str, int] = {}
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return f"request body is not valid JSON: {err.get('ctx', {}).get('error', err.get('msg'))}", None
        loc = err.get("loc", ())
        key = _param(loc) or "body"
        # One message per field; of a union's alternatives, the one that got furthest says most.
        if len(loc) > depth.get(key, -1):
            depth[key] = len(loc)
            problems[key] = f"{key}: {err.get('msg')}" + _got(err)
    if "body" in problems and len(problems) == 1 and "dictionary" in problems["body"]:
        return "request body must be a JSON object (send Content-Type: application/json)", None
    first = next((k for k in problems if k != "body"), None)
    return "invalid request: " + "; ".join(problems.values()), first


def _got(err: dict) -> str:
    if "input" not in err or err.get("type") == "missing":
        return ""
    shown = repr(err["input"])
    return f" (got {shown[:80]}{'...' if len(shown) > 80 else ''})"


def _undecodable(error: UnicodeDecodeError) -> str:
    bad = error.object[error.start : error.end].hex(" ")
    return (
        f"request body is not valid {error.encoding.upper()} (bytes {bad} at offset {error.start}: "
        f"{error.reason}); send JSON text encoded as UTF-8"
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return api_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        message, param = _describe_validation(exc)
        return error_response(400, message, param, "invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if isinstance(exc.__cause__, APIError):
            return api_error_response(exc.__cause__)  # FastAPI wraps body-read errors (413, 408) in a 400
        if isinstance(exc.__cause__, UnicodeDecodeError):
            return error_response(400, _undecodable(exc.__cause__), code="invalid_text")
        message = {
            404: f"no route {request.method} {request.url.path}",
            405: f"method {request.method} not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal server error ({type(exc).__name__}); see the server log")
