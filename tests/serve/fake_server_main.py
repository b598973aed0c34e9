"""Run the real serving path (uvicorn + signal handling + app shutdown) over a slow fake engine, for
the SIGTERM test and tools/overload_test.py --fake: prints the URL, serves until SIGTERM, then prints a
summary of the engine's state.

    fake_server_main.py [STEP_S [MAX_WAITING_REQUESTS [MAX_NUM_SEQS]]]
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(HERE))]  # serve_harness, and the repo root for trellis_testing

from serve_harness import engine_idle, fake_engine  # noqa: E402

from trellis_jax.http_server import bind_socket, serve, url_of  # noqa: E402
from trellis_jax.serve.app import ServerSettings, create_app  # noqa: E402


def main() -> int:
    step_s = float(sys.argv[1]) if len(sys.argv) > 1 else 0.02
    max_waiting = int(sys.argv[2]) if len(sys.argv) > 2 else None
    options = {"max_num_seqs": int(sys.argv[3])} if len(sys.argv) > 3 else {}
    engine = fake_engine(step_s=step_s, **options)
    sock = bind_socket("127.0.0.1", 0)
    print(f"URL {url_of(sock)}", flush=True)
    settings = ServerSettings(model_name="fake-model", max_waiting_requests=max_waiting)
    serve(create_app(engine, settings), sock, graceful_timeout_s=10, log_level="warning")
    engine.engine.scheduler.kv.cache.check_integrity()
    print(f"STOPPED idle={engine_idle(engine)} thread_alive={engine.is_running}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
