"""Loading for tensor parallelism: each shard goes from the file straight onto its device (checkpoints.load_model
with tensor_parallel_size, runner/tensor_parallel.py), and the tokens are those of one device.

Two forced CPU devices need XLA_FLAGS before jax starts, so the cases run in a child (tp_load_child.py) that
records every device_put / jnp.asarray during each load and the engine's construction. One child runs all the
cases (one start and jax import, not one per case); each test reads its case's result, and a case that raised
fails its own tests with the child's traceback.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent
ROOT = HERE.parents[1]
FIXTURES = HERE.parent / "fixtures"


def run_child(cases: dict[str, list[str]]) -> dict:
    """name -> [MODEL, FORMAT] -> name -> {"result": ...} or {"error": ...} (tp_load_child.py, TP 2)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, str(HERE / "tp_load_child.py"), "2", json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=360,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# tiny_llama: 2 KV heads, split evenly (orbax restores onto the shards); tiny_qwen2: 1 KV head, padded to 2
# (orbax restores to the host, the runner pads and splits there).
CASES = [("tiny_llama", "direct"), ("tiny_llama", "orbax"), ("tiny_qwen2", "orbax")]


@pytest.fixture(scope="module")
def every_case() -> dict:
    return run_child({"-".join(case): [str(FIXTURES / case[0]), case[1]] for case in CASES})


@pytest.fixture(params=CASES, ids=["-".join(c) for c in CASES])
def loaded(request, every_case):
    arch, fmt = request.param
    outcome = every_case["-".join(request.param)]
    assert "error" not in outcome, f"the case {arch}/{fmt} failed in the child:\n{outcome.get('error')}"
    return fmt, arch, outcome["result"]


def test_no_device_is_given_a_whole_split_weight(loaded):
    *_, found = loaded
    for device, seen in found["full_copy"].items():
        assert seen["split_seen"] > 0, device  # the shards were placed through the recorded calls
        assert seen["whole"] == [], device


def test_the_loader_returns_host_arrays_or_arrays_already_split(loaded):
    fmt, arch, found = loaded
    if fmt == "orbax" and arch == "tiny_llama":
        assert found["kinds"] == ["jax:2"]  # restored with a NamedSharding over both devices
        assert found["loaded_split_share"] == 0.5
    else:
        assert found["kinds"] == ["numpy"]  # nothing placed until the runner puts each shard on its device


def test_greedy_tokens_match_one_device(loaded):
    *_, found = loaded
    assert found["tokens"] == found["tp1_tokens"]
