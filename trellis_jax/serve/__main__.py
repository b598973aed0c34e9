"""`trellis-serve` (or `python -m trellis_jax.serve`) `[--model PATH|preset] [--host 127.0.0.1] [--port 8000] ...`

With no arguments: the default model (SmolLM2-135M-Instruct) on http://127.0.0.1:8000. Prints the URL,
the model, the KV budget and how long start-up took (compilation shows a progress bar). API keys come
from --api-key (repeatable), TRELLIS_API_KEY or TRELLIS_API_KEYS (comma-separated); several keys =
one tenant each (each key's prefix cache is private to it). Admin keys (--admin-api-key,
TRELLIS_ADMIN_API_KEY or TRELLIS_ADMIN_API_KEYS) are tenants that may also flush every tenant's cache.
With keys, /metrics (an admin key once any exists) and the API docs need a key too, unless
--public-metrics / --open-docs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from trellis_jax.cli import new_parser
from trellis_jax.engine import flags
from trellis_jax.engine.flags import add_engine_flags, parse_engine_args
from trellis_jax.engine.multihost_flags import Job
from trellis_jax.serve.tool_calls.formats import PARSER_CHOICES


def build_parser() -> argparse.ArgumentParser:
    p = new_parser("trellis-serve", __doc__.split("\n\n")[0])
    add_engine_flags(p)
    http = p.add_argument_group("server")
    http.add_argument(
        "--served-model-name", default=None, help="the name clients send as `model` (default: derived from --model)"
    )
    http.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1, loopback only)")
    http.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one")
    http.add_argument(
        "--api-key",
        action="append",
        default=[],
        help="require 'Authorization: Bearer KEY' (repeatable; default: none, open)",
    )
    http.add_argument(
        "--admin-api-key",
        action="append",
        default=[],
        help="a key that may also flush every tenant's cache (POST /flush_cache) and, once any "
        "exists, is the only kind that reads /metrics; repeatable (default: none)",
    )
    http.add_argument("--public-metrics", action="store_true", help="with API keys, serve GET /metrics without a key")
    http.add_argument(
        "--open-docs", action="store_true", help="with API keys, serve /docs, /redoc and /openapi.json without a key"
    )
    http.add_argument("--max-body-bytes", type=int, default=4 * 2**20, help="larger request bodies get 413")
    http.add_argument(
        "--body-read-timeout",
        type=_positive(float),
        default=30.0,
        help="seconds a request body may take to arrive in full; slower clients get 408",
    )
    http.add_argument(
        "--limit-concurrency",
        type=_at_least_two,
        default=512,
        help="concurrent connections held at most; past it new requests get 503",
    )
    http.add_argument(
        "--max-waiting-requests",
        type=_non_negative_int,
        default=None,
        help="generation requests queued beyond the running batch; past it 429 with Retry-After "
        "(default: the quarter-context requests the KV pool holds, at least --max-num-seqs)",
    )
    http.add_argument(
        "--tool-call-parser",
        default="auto",
        choices=PARSER_CHOICES,
        help="how tool calls are read out of replies: hermes (<tool_call> JSON), llama3_json, or auto "
        "(from the chat template; a template without tools gets them in the system message, Hermes format)",
    )
    http.add_argument(
        "--data-parallel-size",
        type=_positive(int),
        default=1,
        help="run this many replicas (subprocesses) behind the cache-aware router on --host/--port; "
        "each holds its own engine, so it needs cores or devices enough for all",
    )
    http.add_argument("--graceful-timeout", type=float, default=30.0, help="seconds in-flight requests get on SIGTERM")
    http.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="device peak, exported for MFU (default: known for H200, H100, A100, L4)",
    )
    http.add_argument(
        "--peak-gbps",
        type=float,
        default=None,
        help="device memory bandwidth, exported for bandwidth use (default: known for H200, H100, A100, L4)",
    )
    http.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="server log level",
    )
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return parse_engine_args(build_parser(), argv)


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:  # uvicorn counts the request's own connection: 1 would refuse every request
        raise argparse.ArgumentTypeError(f"must be >= 2, got {text}")
    return value


def engine_options(args: argparse.Namespace) -> dict:
    return flags.engine_options(args)


def served_name(args: argparse.Namespace) -> str:
    if args.served_model_name:
        return args.served_model_name
    if args.model is None:
        return "SmolLM2-135M-Instruct"
    base = os.path.basename(os.path.normpath(args.model))
    return base[:-5] if base.endswith(".gguf") else base


def api_keys_from(args: argparse.Namespace, environ) -> tuple[str, ...]:
    """--api-key values, then TRELLIS_API_KEYS (comma-separated) and TRELLIS_API_KEY; duplicates dropped."""
    return _keys(args.api_key, environ, "TRELLIS_API_KEY")


def admin_api_keys_from(args: argparse.Namespace, environ) -> tuple[str, ...]:
    """--admin-api-key values, then TRELLIS_ADMIN_API_KEYS (comma-separated) and TRELLIS_ADMIN_API_KEY."""
    return _keys(args.admin_api_key, environ, "TRELLIS_ADMIN_API_KEY")


def _keys(given: list[str], environ, variable: str) -> tuple[str, ...]:
    from_env = environ.get(variable + "S", "").split(",") + [environ.get(variable, "")]
    return tuple(dict.fromkeys(list(given) + [k.strip() for k in from_env if k.strip()]))


def main(argv=None) -> int:
    args = parse_args(argv)
    job = Job.from_args(args, os.environ)  # None: one process (engine/multihost_flags.py)
    if job is not None and args.data_parallel_size > 1:
        print("trellis-serve: --data-parallel-size and --num-processes do not combine", file=sys.stderr)
        return 2
    if job is not None and not job.is_leader:  # a follower: no HTTP server, the leader's plans only
        config = flags.engine_config(args)
        job.join(config)
        return job.run_follower(config)
    if args.data_parallel_size > 1:
        from trellis_jax.serve.replicas import run_replicas

        given = list(sys.argv[1:] if argv is None else argv)
        return run_replicas(
            given, args.data_parallel_size, args.host, args.port, args.log_level, args.graceful_timeout, args.model
        )
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from trellis_jax.http_server import bind_socket, make_server, run_until_signalled, url_of
    from trellis_jax.serve.startup import LoadingApp

    api_keys, admin_keys = api_keys_from(args, os.environ), admin_api_keys_from(args, os.environ)
    if not api_keys and not admin_keys and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"trellis-serve: WARNING: listening on {args.host} without an API key: anyone who can reach "
            "this address can use the model (pass --api-key)",
            file=sys.stderr,
            flush=True,
        )
    sock = bind_socket(args.host, args.port)  # fail fast on a taken port, before minutes of compiling
    gate = LoadingApp(served_name(args))
    server = make_server(
        gate,
        graceful_timeout_s=args.graceful_timeout,
        log_level=args.log_level,
        limit_concurrency=args.limit_concurrency,
    )
    print(
        f"trellis-serve: {url_of(sock)} answers 503 until {served_name(args)} is loaded and compiled "
        "(this takes a while on CPU)...",
        flush=True,
    )

    def stop(error: BaseException) -> None:
        print(f"trellis-serve: loading failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        server.should_exit = True

    gate.load_in_background(lambda: build_app(args, api_keys, admin_keys, url_of(sock), job), on_failure=stop)
    try:
        run_until_signalled(server, sock)
    finally:
        if job is not None:
            job.close()  # the followers exit 0
    if gate.error is not None:
        return 1
    print("trellis-serve: shut down cleanly", flush=True)
    return 0


def build_app(args: argparse.Namespace, api_keys: tuple[str, ...], admin_keys: tuple[str, ...], url: str, job=None):
    """Load the model, compile, and build the app (on the loading thread); prints the start-up line.
    `job`: process 0 of a multi-process job: join it, and wait for the followers, first."""
    start = time.perf_counter()
    from trellis_jax.engine.api import AsyncEngine
    from trellis_jax.model.params import streamed_weight_bytes
    from trellis_jax.serve.app import ServerSettings, create_app
    from trellis_jax.serve.costs import CostModel, ceilings_for

    if job is None:
        engine = AsyncEngine.from_options(**engine_options(args))
    else:
        config = flags.engine_config(args)
        job.join(config)
        engine = AsyncEngine(
            *job.build_leader_engine(config), check_integrity_when_idle=config.check_integrity_when_idle
        )
    runner = engine.engine.runner
    settings = ServerSettings(
        model_name=served_name(args),
        api_keys=api_keys,
        admin_api_keys=admin_keys,
        public_metrics=args.public_metrics,
        open_docs=args.open_docs,
        max_body_bytes=args.max_body_bytes,
        body_read_timeout_s=args.body_read_timeout,
        max_waiting_requests=args.max_waiting_requests,
        tool_call_parser=args.tool_call_parser,
        cost=CostModel(runner.config, weight_bytes=streamed_weight_bytes(runner.params)),
        ceilings=ceilings_for(_device_kind(), args.peak_tflops, args.peak_gbps),
    )
    app = create_app(engine, settings)
    pool = getattr(runner, "kv_pool", None)
    dtype = getattr(runner.config, "dtype", None)
    dtype_note = f" ({dtype}{', --dtype auto' if args.dtype == 'auto' else ''})" if dtype else ""
    print(
        f"trellis-serve: {url}/v1  model={settings.model_name}{dtype_note}  "
        f"KV={pool.describe() if pool is not None else runner.num_pages}  "
        f"auth={'on' if api_keys or admin_keys else 'off'}  started in {time.perf_counter() - start:.1f}s",
        flush=True,
    )
    return app


def _device_kind() -> str | None:
    try:
        import jax

        return jax.devices()[0].device_kind
    except Exception:  # no backend: no ceilings
        return None


if __name__ == "__main__":
    sys.exit(main())
