"""The parent side of tp_child.py: run named jobs in one child with four forced CPU devices.

A child costs a Python start, a jax import and a model load before its first compile, so the tensor-parallel
tests ask for all their tiny-model jobs at once (the session fixture `tp_results` in conftest.py) and each
test reads its own job's result with `job_result`, which fails that test alone, with the child's traceback,
when its job raised.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).parent
ROOT = HERE.parents[1]
FIXTURES = HERE.parent / "fixtures"


def run_jobs(jobs: dict[str, list[str]], timeout: int = 900) -> dict[str, dict]:
    """name -> [MODE, MODEL, SIZES(, "on")] (see tp_child.py) -> name -> {"result": ...} or {"error": ...}."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, str(HERE / "tp_child.py"), json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def job_result(results: dict[str, dict], name: str):
    """The result of job `name`; a job that raised fails the caller with the child's traceback."""
    outcome = results[name]
    assert "error" not in outcome, f"tp_child job {name!r} failed:\n{outcome.get('error')}"
    return outcome["result"]


def run_job(mode: str, model: str, sizes: str, *extra: str) -> dict:
    """One job in its own child (for a job no other test shares, such as the default model's)."""
    return job_result(run_jobs({mode: [mode, model, sizes, *extra]}), mode)


# Every tiny-model job of the tensor-parallel tests, in one child. "compiles" runs first, in the fresh
# process, so a program some other job compiled cannot hide one that warm-up missed.
TINY_JOBS = {
    "compiles": ["compiles", str(FIXTURES / "tiny_llama"), "2,4"],
    "kv_bytes": ["kv_bytes", str(FIXTURES / "tiny_llama"), "1,2,4"],
    **{arch: ["generate", str(FIXTURES / arch), "1,2,4"] for arch in ("tiny_llama", "tiny_qwen2", "tiny_mistral")},
}
