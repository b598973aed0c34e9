"""Schema fuzz: schemathesis generates requests (valid and invalid) from the server's own OpenAPI
document; whatever they contain, the server never answers 5xx, every error is OpenAI-shaped, and every
status, content type and 405 `Allow` header is the one the document promises (no undocumented 400 for
a documented 422)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from serve_harness import fake_engine

from trellis_jax.serve.app import ServerSettings, create_app

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import (  # noqa: E402 (only once importorskip found it)
    allow_header_conformance,
    content_type_conformance,
    status_code_conformance,
)

ENGINE = fake_engine()
APP = create_app(ENGINE, ServerSettings(model_name="fake-model", shutdown_engine=False))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_openai_errors_and_only_documented_answers(case):
    response = case.call()
    case.validate_response(
        response, checks=[status_code_conformance, content_type_conformance, allow_header_conformance]
    )
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and error["type"]
