"""`python -m trellis_jax.router --worker URL --worker URL ... [--policy cache_aware|round_robin|least_load]`

An OpenAI-compatible proxy in front of several Trellis servers that sends requests sharing a prefix to the
same server, so its prefix cache pays off. Prompts are keyed by token ids with --tokenizer (the servers'
GGUF file or Hugging Face directory: the same tokenizer and chat template they use), else by characters.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from trellis_jax.cli import new_parser
from trellis_jax.router.app import RouterSettings, create_app
from trellis_jax.router.policy import POLICIES


def build_parser() -> argparse.ArgumentParser:
    p = new_parser("trellis-router", __doc__.split("\n\n")[0])
    p.add_argument("--worker", action="append", default=[], help="a server's URL, http://HOST:PORT (repeatable)")
    p.add_argument(
        "--workers-file",
        default=None,
        help="a file of worker URLs, one a line, re-read when it changes (adds and removes workers)",
    )
    p.add_argument("--policy", default="cache_aware", choices=POLICIES, help="how a worker is chosen")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one")
    p.add_argument(
        "--tokenizer",
        default=None,
        help="the servers' GGUF file or Hugging Face directory: key prompts by their token ids "
        "(default: none, key prompts by characters)",
    )
    p.add_argument(
        "--cache-threshold",
        type=float,
        default=0.5,
        help="cache_aware: below this share of the prompt matched, route to the least loaded worker",
    )
    p.add_argument(
        "--imbalance-threshold",
        type=int,
        default=8,
        help="cache_aware: route to the idlest worker when the best match has more than this many "
        "requests in flight beyond it",
    )
    p.add_argument(
        "--block-size", type=int, default=None, help="prefix index granularity (default: 16 tokens, or 64 characters)"
    )
    p.add_argument("--max-index-blocks", type=int, default=100_000, help="prefix blocks remembered per worker (LRU)")
    p.add_argument(
        "--admin-key",
        action="append",
        default=[],
        help="a key for /admin/workers (repeatable; also TRELLIS_ROUTER_ADMIN_KEY; default: none, admin off)",
    )
    p.add_argument("--health-interval", type=float, default=2.0, help="seconds between health checks")
    p.add_argument("--health-timeout", type=float, default=2.0, help="seconds a health check may take")
    p.add_argument("--health-failures", type=int, default=2, help="failed checks in a row that drop a worker")
    p.add_argument("--max-attempts", type=int, default=3, help="workers tried for a request that has not started")
    p.add_argument("--connect-timeout", type=float, default=5.0, help="seconds to connect to a worker")
    p.add_argument("--request-timeout", type=float, default=600.0, help="seconds a worker may stay silent mid-answer")
    p.add_argument("--max-body-bytes", type=int, default=4 * 2**20, help="larger request bodies get 413")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="router log level",
    )
    return p


def settings_from(args: argparse.Namespace, environ) -> RouterSettings:
    admin = tuple(
        dict.fromkeys([*args.admin_key, *filter(None, [environ.get("TRELLIS_ROUTER_ADMIN_KEY", "").strip()])])
    )
    return RouterSettings(
        workers=tuple(args.worker),
        policy=args.policy,
        cache_threshold=args.cache_threshold,
        imbalance_threshold=args.imbalance_threshold,
        block_size=args.block_size,
        max_index_blocks=args.max_index_blocks,
        admin_keys=admin,
        health_interval_s=args.health_interval,
        health_timeout_s=args.health_timeout,
        failures_to_drop=args.health_failures,
        max_attempts=args.max_attempts,
        connect_timeout_s=args.connect_timeout,
        read_timeout_s=args.request_timeout,
        max_body_bytes=args.max_body_bytes,
        workers_file=args.workers_file,
    )


def load_tokenizer(path: str | None):
    if path is None:
        return None
    from trellis_jax.tokenizer import Tokenizer

    return Tokenizer.from_hf_dir(path) if os.path.isdir(path) else Tokenizer.from_gguf(path)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.worker and not args.workers_file:
        parser.error("give at least one --worker URL (or a --workers-file)")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(settings_from(args, os.environ), load_tokenizer(args.tokenizer))
    except (ValueError, OSError) as error:
        parser.error(str(error))
    from trellis_jax.http_server import bind_socket, make_server, stop_on_signal, url_of

    sock = bind_socket(args.host, args.port)
    server = make_server(app, graceful_timeout_s=30, log_level=args.log_level)
    unit = "token ids" if args.tokenizer else "characters"
    with stop_on_signal(server):
        print(
            f"trellis-router: {url_of(sock)}/v1 -> {len(app.state.pool.all)} workers, policy={args.policy}, "
            f"prompts keyed by {unit}",
            flush=True,
        )
        server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
