"""Fixtures of the warm-restart tests under a real engine (trellis_testing/kv_restart.py: one small
deterministic config, one shared-system request).

llama        (the tiny Llama, a Runner built for restart_config()): session-wide, so the test files that
             restart engines on it compile its step programs once; each test builds its own engines on it
cold_output  a cold engine's greedy answer to question 1 on that runner: what a restarted engine must equal
"""

from __future__ import annotations

import pytest

from trellis_jax.engine.builder import build_engine, make_runner
from trellis_testing.kv_restart import ask, restart_config


@pytest.fixture(scope="session")
def llama(tiny_model):
    loaded = tiny_model("llama")
    return loaded, make_runner(restart_config(), loaded)


@pytest.fixture(scope="session")
def cold_output(llama):
    engine, _ = build_engine(restart_config(), *llama)
    return ask(engine, "cold", 1)
