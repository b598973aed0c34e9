"""Fixtures: one fake-engine server for the whole session (fast), and an OpenAI client pointed at it."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from serve_harness import serve_fake  # noqa: E402


@pytest.fixture(scope="session")
def fake_server():
    server, engine = serve_fake()
    with server:
        yield server
    engine.shutdown()


@pytest.fixture(scope="session")
def fake_engine_of(fake_server):
    return fake_server.server.config.app.state.engine if hasattr(fake_server.server.config.app, "state") else None


@pytest.fixture
def client(fake_server):
    import openai

    return openai.OpenAI(base_url=fake_server.url + "/v1", api_key="unused", max_retries=0, timeout=30)
