"""tools/gpu_model_bench.py's command-buffer variants: each XLA_FLAGS setting it runs a variant under is one this
JAX's XLA accepts (XLA aborts at backend start on a flag or a command type it does not know, so a misspelling
would only show on the GPU run), checked in a child process as the bench runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tools.gpu_model_bench import COMMAND_BUFFERS

SCAN = "import jax, jax.numpy as jnp; print(jax.lax.scan(lambda c, x: (c + x, None), 0.0, jnp.ones(3))[0])"


def run_under(xla_flags: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-c", SCAN], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("variant", ["off", "while"])
def test_the_bench_command_buffer_flags_are_accepted(variant):
    done = run_under(COMMAND_BUFFERS[variant])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "3.0"


def test_an_unknown_command_type_is_refused():
    assert run_under("--xla_gpu_enable_command_buffer=+NOT_A_COMMAND").returncode != 0
