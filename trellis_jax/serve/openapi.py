"""The API's documentation as this server really answers, and the pages that serve it.

- `error_responses(*statuses)`: the `responses=` of a route, in OpenAI error JSON, with why each happens;
  routes list only statuses they answer (401 only when keys are configured).
- `strip_validation_422(app)`: FastAPI documents a 422 on every route with a body or a parameter; this
  server answers validation errors with 400 (errors.py), so the 422 and its schemas leave the document.
- `install_docs(app, guard)`: GET /openapi.json, /docs (Swagger UI), /redoc, each with the `guard`
  dependencies (the API key unless the server opens them); none of them is listed in the schema.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse
from pydantic import BaseModel

_WHY = {
    400: "invalid request: malformed JSON, a field out of range, a prompt too long for the context",
    401: "missing or invalid API key",
    403: "a tenant's key where an admin key is needed (the figures span every tenant)",
    404: "no such model (see GET /v1/models)",
    408: "the request body did not arrive within the server's body read timeout",
    413: "the request body is larger than the server's limit",
    429: "the server holds its maximum of running and waiting requests; retry after the Retry-After header's seconds",
    500: "internal error (details in the server log)",
    503: "the model is still loading, the server is shutting down, or it holds its maximum of concurrent connections",
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_responses(*statuses: int) -> dict:
    return {status: {"model": ErrorResponse, "description": _WHY[status]} for status in statuses}


def strip_validation_422(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
        return app.openapi_schema

    app.openapi = openapi


def install_docs(app: FastAPI, guard: list) -> None:
    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    async def openapi_document():
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guard)
    async def swagger_ui():
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - Swagger UI")

    @app.get("/redoc", include_in_schema=False, dependencies=guard)
    async def redoc():
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")
