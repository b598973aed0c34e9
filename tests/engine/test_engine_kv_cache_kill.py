"""kill -9 of an engine on a --kv-cache-dir (tiny Llama, deterministic): the next engine on that directory
serves only valid pages (nothing refused as damaged: a page is renamed into place whole or not at all) and
answers exactly as a cold engine, hitting the pages made durable before the kill (the child:
trellis_testing/kv_kill_child.py, killed while later checkpoints are queued or being written)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from trellis_jax.engine.builder import build_engine
from trellis_testing.kv_restart import SYSTEM, ask, restart_config

DEADLINE_S = 120  # the child's imports and compiles on a loaded machine


def serve_then_kill(model_dir, cache_dir, served: int) -> None:
    """Run the child until it has served `served` requests, then SIGKILL it mid-stream."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-m", "trellis_testing.kv_kill_child", str(model_dir), str(cache_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + DEADLINE_S
    try:
        for line in child.stdout:
            if line.strip() == f"served {served - 1}" or time.monotonic() > deadline:
                break
        assert time.monotonic() <= deadline, "the child did not serve in time"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL


def test_restart_after_kill_9_serves_valid_pages_only(llama, cold_output, fixtures_dir, tmp_path):
    serve_then_kill(fixtures_dir / "tiny_llama", tmp_path, served=6)
    engine, _ = build_engine(restart_config(kv_cache_dir=str(tmp_path)), *llama)
    engine.tiers.cost.prefill_tokens_per_s = 1.0  # reload whatever it can: a bad page must not slip through
    output = ask(engine, "b", 1)
    store = engine.tiers.store.stats()
    engine.close()
    assert store["refused_corrupt"] == 0
    assert output.num_cached_tokens >= len(SYSTEM)  # flushed before the kill
    assert output.token_ids == cold_output.token_ids
