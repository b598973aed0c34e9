"""Two processes through the CLIs (engine/multihost_flags.py): trellis-batch as a two-process job writes what
one process with two forced CPU devices writes; trellis-serve's leader answers an error, not a hang, once its
follower is killed. Each process has one CPU device; the TP 2 mesh spans both (gloo collectives)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).parents[2]
MODEL = str(ROOT / "tests" / "fixtures" / "tiny_llama")
SMALL = [
    *("--model", MODEL, "--dtype", "float32", "--page-size", "4", "--max-num-seqs", "4"),
    *("--max-num-batched-tokens", "16", "--max-model-len", "96", "--token-buckets", "16", "--seq-buckets", "4"),
    *("--tensor-parallel-size", "2", "--no-compile-cache"),
]
PROMPTS = ["hello world", "the quick brown fox", "a"]
TIMEOUT = 115  # a hang guard per test: measured 68-90 s (batch, 3 processes) and 36-47 s (serve) here, loaded


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]), **extra)
    return env


def job_flags(process_id: int, coordinator_port: int, plan_port: int) -> list[str]:
    return [
        *("--num-processes", "2", "--process-id", str(process_id)),
        *("--coordinator", f"127.0.0.1:{coordinator_port}", "--plan-port", str(plan_port)),
    ]


def batch(tmp_path, name: str, extra: list[str], env: dict) -> subprocess.Popen:
    argv = [sys.executable, "-m", "trellis_jax.batch", "--input", str(tmp_path / "in.jsonl")]
    argv += ["--output", str(tmp_path / name), "--temperature", "0", "--max-tokens", "8", "--no-progress"]
    with open(tmp_path / f"{name}.log", "w") as log:  # a file, not a pipe nobody reads while the other runs
        process = subprocess.Popen([*argv, *SMALL, *extra], env=env, cwd=ROOT, stderr=log)
    process.log = tmp_path / f"{name}.log"
    return process


def finish(process: subprocess.Popen, deadline: float) -> tuple[int, str]:
    try:
        process.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        process.kill()
    return process.returncode, process.log.read_text()


def results(path) -> list[dict]:
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda r: r["id"])


def test_two_process_batch_job_writes_what_one_process_at_tp2_writes(tmp_path):
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in enumerate(PROMPTS))
    )
    deadline = time.monotonic() + TIMEOUT
    env = environment(TRELLIS_PLAN_SECRET="a test secret of 16+ bytes")
    coordinator, plan = free_port(), free_port()
    follower = batch(tmp_path, "follower.jsonl", job_flags(1, coordinator, plan), env)
    leader = batch(tmp_path, "two.jsonl", job_flags(0, coordinator, plan), env)
    leader_rc, leader_err = finish(leader, deadline)
    follower_rc, follower_err = finish(follower, deadline)
    assert leader_rc == 0, leader_err[-3000:]
    assert follower_rc == 0, follower_err[-3000:]
    assert "the leader closed the job" in follower_err
    assert not (tmp_path / "follower.jsonl").exists()  # a follower runs plans, it reads and writes no job files
    one = batch(tmp_path, "one.jsonl", [], environment(XLA_FLAGS="--xla_force_host_platform_device_count=2"))
    one_rc, one_err = finish(one, deadline)
    assert one_rc == 0, one_err[-3000:]
    two, reference = results(tmp_path / "two.jsonl"), results(tmp_path / "one.jsonl")
    assert len(two) == len(PROMPTS) and all(r["token_ids"] for r in two)
    assert two == reference


def wait_for_line(process: subprocess.Popen, marker: str, deadline: float) -> str:
    """The first stdout line holding `marker` (the leader prints its start-up line once the followers joined)."""
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if marker in line:
            return line
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"no {marker!r} line before the deadline (exit status {process.poll()})")


def test_serve_leader_answers_503_once_its_follower_is_killed(tmp_path):
    deadline = time.monotonic() + TIMEOUT
    env = environment(TRELLIS_PLAN_SECRET="a test secret of 16+ bytes")
    coordinator, plan = free_port(), free_port()
    serve = [sys.executable, "-m", "trellis_jax.serve", "--port", "0", *SMALL]
    with open(tmp_path / "follower.log", "w") as log:
        follower = subprocess.Popen([*serve, *job_flags(1, coordinator, plan)], env=env, cwd=ROOT, stderr=log)
    leader = subprocess.Popen(
        [*serve, *job_flags(0, coordinator, plan)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = wait_for_line(leader, "model=", deadline).split()[1]  # "trellis-serve: URL/v1  model=..."
        follower.send_signal(signal.SIGKILL)
        follower.wait(timeout=30)
        body = json.dumps({"model": "tiny_llama", "prompt": "hello", "max_tokens": 4}).encode()
        request = urllib.request.Request(f"{url}/completions", body, {"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=max(deadline - time.monotonic(), 1))
            raise AssertionError("the leader answered 200 without its follower")
        except urllib.error.HTTPError as error:
            status, message = error.code, error.read().decode()
        assert status == 503, message
        assert "is gone" in message
    finally:
        follower.kill()
        leader.kill()
        leader.wait(timeout=30)
