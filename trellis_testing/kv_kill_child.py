"""The child of the kill -9 test: an engine on a --kv-cache-dir that serves shared-system requests forever.

    python -m trellis_testing.kv_kill_child MODEL_DIR CACHE_DIR

The first request (SYSTEM and question 0, kv_restart.ask) is checkpointed and flushed to disk: the parent
knows those pages are durable. Every later one adds two whole pages of its own after SYSTEM, checkpointed
(as the server does when idle) but not flushed, then prints "served N", so the parent can SIGKILL it with
pages still queued for disk or half written.
"""

from __future__ import annotations

import itertools
import sys

from trellis_jax.engine.builder import build_engine
from trellis_testing.drive import run_all
from trellis_testing.kv_restart import GREEDY, SYSTEM, ask, restart_config


def main(model_dir: str, cache_dir: str) -> None:
    engine, _ = build_engine(restart_config(model=model_dir, kv_cache_dir=cache_dir))
    ask(engine, "r0", 0)
    engine.checkpoint()
    engine.tiers.store.flush()
    print("served 0", flush=True)
    for n in itertools.count(1):
        own = [(7 * n + j) % 200 + 30 for j in range(40)]
        engine.add_request(f"r{n}", SYSTEM + own, GREEDY)
        run_all(engine)
        engine.checkpoint()
        print(f"served {n}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
