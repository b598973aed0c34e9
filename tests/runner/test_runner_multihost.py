"""Two processes through jax.distributed (runner/multihost.py) give the tokens one process gives.

Each child process has one CPU device; the TP 2 mesh spans both, its collectives through gloo. Process 0
runs the engine and sends each step's plan to process 1 (tp_multiprocess_child.py). The reference is one
process at TP 1 with the cache on (tp_child.py's tiny_llama job, shared with the tensor-parallel tests through
the session fixture `tp_results`), same prompts, buckets and pool.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from tp_jobs import FIXTURES, HERE, ROOT, job_result

TIMEOUT = 600  # a hang guard: the run itself takes ~30 s of CPU


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_generate_what_one_process_generates(tp_results):
    model = str(FIXTURES / "tiny_llama")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    ports = [str(free_port()), str(free_port())]
    script = str(HERE / "tp_multiprocess_child.py")
    follower = subprocess.Popen(
        [sys.executable, script, "1", *ports, model], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        leader = subprocess.run(
            [sys.executable, script, "0", *ports, model],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert leader.returncode == 0, leader.stderr[-3000:]
        assert follower.wait(timeout=60) == 0
    finally:
        follower.kill()
    tokens = json.loads(leader.stdout.strip().splitlines()[-1])
    reference = job_result(tp_results, "tiny_llama")["1/cache"]
    assert tokens == [row["tokens"] for row in reference]
