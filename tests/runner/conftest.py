"""Shared fixtures for the runner tests: a tiny random Llama (helpers live in runner_helpers.py)."""

from __future__ import annotations

import jax
import pytest
from runner_helpers import TINY

from trellis_jax.model import init_params


@pytest.fixture(scope="session")
def tiny_random_model():
    return TINY, init_params(TINY, jax.random.key(0), scale=0.5)
