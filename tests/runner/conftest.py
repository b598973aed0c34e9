"""Shared fixtures for the runner tests: a tiny random Llama (helpers live in runner_helpers.py), and the
results of the tensor-parallel child's tiny-model jobs (tp_jobs.py), run once for every module that reads them."""

from __future__ import annotations

import jax
import pytest
from runner_helpers import TINY
from tp_jobs import TINY_JOBS, run_jobs

from trellis_jax.model import init_params


@pytest.fixture(scope="session")
def tiny_random_model():
    return TINY, init_params(TINY, jax.random.key(0), scale=0.5)


@pytest.fixture(scope="session")
def tp_results() -> dict:
    """tp_jobs.TINY_JOBS' name -> {"result": ...} or {"error": ...}; read one with tp_jobs.job_result."""
    return run_jobs(TINY_JOBS)
