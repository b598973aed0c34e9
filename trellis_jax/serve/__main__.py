"""`python -m trellis_jax.serve [--model PATH|preset] [--host 127.0.0.1] [--port 8000] ...`

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

from trellis_jax.dtypes import DTYPE_CHOICES


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m trellis_jax.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="GGUF file, HF directory, orbax checkpoint or preset (default: SmolLM2-135M-Instruct)")
    p.add_argument("--served-model-name", default=None, help="the name clients send as `model` (default: derived from --model)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", action="append", default=[], help="require 'Authorization: Bearer KEY' (repeatable)")
    p.add_argument("--admin-api-key", action="append", default=[],
                   help="a key that may also flush every tenant's cache (POST /flush_cache) and, once any "
                        "exists, is the only kind that reads /metrics; repeatable")
    p.add_argument("--public-metrics", action="store_true", help="with API keys, serve GET /metrics without a key")
    p.add_argument("--open-docs", action="store_true",
                   help="with API keys, serve /docs, /redoc and /openapi.json without a key")
    p.add_argument("--max-body-bytes", type=int, default=4 * 2**20)
    p.add_argument("--body-read-timeout", type=_positive(float), default=30.0,
                   help="seconds a request body may take to arrive in full; slower clients get 408 (default 30)")
    p.add_argument("--limit-concurrency", type=_at_least_two, default=512,
                   help="concurrent connections held at most; past it new requests get 503 (default 512)")
    p.add_argument("--max-waiting-requests", type=_non_negative_int, default=None,
                   help="generation requests queued beyond the running batch; past it 429 with Retry-After "
                        "(default: the quarter-context requests the KV pool holds, at least --max-num-seqs)")
    p.add_argument("--graceful-timeout", type=float, default=30.0, help="seconds in-flight requests get on SIGTERM")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                   help="model dtype; auto (default): bfloat16 where this machine computes it natively (GPUs, "
                        "CPUs with AVX512_BF16: ~1.7x float32's speed), else float32")
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--kv-memory", default=None, help="KV pool size, e.g. 512MiB (default: the runner's)")
    p.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="dtype of the KV pages (auto: the model's); bfloat16 halves KV memory and decode reads")
    p.add_argument("--max-num-seqs", type=int, default=32)
    p.add_argument("--max-num-batched-tokens", type=int, default=512)
    p.add_argument("--prefill-saturation-tokens", type=int, default=None,
                   help="admit no further prompt into a step that already holds this many prompt tokens: lower "
                        "time to first token, somewhat lower throughput (CPU: try 64; default off)")
    p.add_argument("--num-lookup-tokens", type=int, default=0,
                   help="speculative decoding by prompt lookup: greedy requests also verify up to this many tokens "
                        "guessed from their own context per step (same output, fewer steps when it repeats its "
                        "context: quotes, code edits, summaries); default 0 = off, try 3")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--eviction-policy", default="lru")
    p.add_argument("--schedule-policy", default="lpm")
    p.add_argument("--disable-radix-cache", action="store_true")
    p.add_argument("--deterministic", action="store_true", help="one compiled shape: batch-invariant outputs, slower")
    p.add_argument("--unroll-layers", action="store_true",
                   help="unroll the layer loop: faster steps on GPU (~1.4x decode on an H200), ~8x longer compiles")
    p.add_argument("--no-materialise-head", action="store_true",
                   help="tied-embedding models: do not keep a transposed copy of the embedding for the LM head "
                        "(saves one embedding of memory; the CPU head gets slower)")
    p.add_argument("--compile-cache-dir", default=default_compile_cache_dir(),
                   help="keep compiled step programs here so the next start skips compiling (default: %(default)s)")
    p.add_argument("--no-compile-cache", action="store_true", help="compile from scratch, keep nothing")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for the MFU gauge")
    p.add_argument("--peak-gbps", type=float, default=None, help="device memory bandwidth for the utilisation gauge")
    p.add_argument("--allow-special-tokens-in-content", action="store_true",
                   help="let special-token text in chat messages (<|im_start|>...) act as control tokens; by "
                        "default it is plain text. Raw /v1/completions string prompts always parse them")
    p.add_argument("--chat-template", default=None, metavar="FILE",
                   help="a Jinja chat template (Hugging Face semantics) used instead of the model's (default: the model's)")
    p.add_argument("--log-level", default="info")
    return p.parse_args(argv)


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
    return dict(model=args.model, dtype=args.dtype, page_size=args.page_size, kv_memory=args.kv_memory,
                kv_cache_dtype=None if args.kv_cache_dtype == "auto" else args.kv_cache_dtype,
                max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                prefill_saturation_tokens=args.prefill_saturation_tokens, num_lookup_tokens=args.num_lookup_tokens,
                max_model_len=args.max_model_len, eviction_policy=args.eviction_policy,
                schedule_policy=args.schedule_policy, disable_radix_cache=args.disable_radix_cache,
                deterministic=args.deterministic, unroll_layers=args.unroll_layers,
                materialise_head=False if args.no_materialise_head else None,
                compile_cache_dir=None if args.no_compile_cache else args.compile_cache_dir,
                allow_special_tokens_in_content=args.allow_special_tokens_in_content, chat_template=args.chat_template)


def default_compile_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "trellis-jax", "xla")


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
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from trellis_jax.serve.server import bind_socket, make_server, run_until_signalled, url_of
    from trellis_jax.serve.startup import LoadingApp

    api_keys, admin_keys = api_keys_from(args, os.environ), admin_api_keys_from(args, os.environ)
    if not api_keys and not admin_keys and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"trellis-serve: WARNING: listening on {args.host} without an API key: anyone who can reach "
              "this address can use the model (pass --api-key)", file=sys.stderr, flush=True)
    sock = bind_socket(args.host, args.port)  # fail fast on a taken port, before minutes of compiling
    gate = LoadingApp(served_name(args))
    server = make_server(gate, graceful_timeout_s=args.graceful_timeout, log_level=args.log_level,
                         limit_concurrency=args.limit_concurrency)
    print(f"trellis-serve: {url_of(sock)} answers 503 until {served_name(args)} is loaded and compiled "
          "(this takes a while on CPU)...", flush=True)

    def stop(error: BaseException) -> None:
        print(f"trellis-serve: loading failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        server.should_exit = True

    gate.load_in_background(lambda: build_app(args, api_keys, admin_keys, url_of(sock)), on_failure=stop)
    run_until_signalled(server, sock)
    if gate.error is not None:
        return 1
    print("trellis-serve: shut down cleanly", flush=True)
    return 0


def build_app(args: argparse.Namespace, api_keys: tuple[str, ...], admin_keys: tuple[str, ...], url: str):
    """Load the model, compile, and build the app (on the loading thread); prints the start-up line."""
    start = time.perf_counter()
    from trellis_jax.engine.api import AsyncEngine
    from trellis_jax.serve.app import ServerSettings, create_app
    from trellis_jax.serve.costs import CostModel, ceilings_for

    engine = AsyncEngine.from_options(**engine_options(args))
    runner = engine.engine.runner
    settings = ServerSettings(model_name=served_name(args), api_keys=api_keys, admin_api_keys=admin_keys,
                              public_metrics=args.public_metrics, open_docs=args.open_docs,
                              max_body_bytes=args.max_body_bytes, body_read_timeout_s=args.body_read_timeout,
                              max_waiting_requests=args.max_waiting_requests, cost=CostModel(runner.config),
                              ceilings=ceilings_for(_device_kind(), args.peak_tflops, args.peak_gbps))
    app = create_app(engine, settings)
    pool = getattr(runner, "kv_pool", None)
    dtype = getattr(runner.config, "dtype", None)
    dtype_note = f" ({dtype}{', --dtype auto' if args.dtype == 'auto' else ''})" if dtype else ""
    print(f"trellis-serve: {url}/v1  model={settings.model_name}{dtype_note}  "
          f"KV={pool.describe() if pool is not None else runner.num_pages}  "
          f"auth={'on' if api_keys or admin_keys else 'off'}  started in {time.perf_counter() - start:.1f}s", flush=True)
    return app


def _device_kind() -> str | None:
    try:
        import jax

        return jax.devices()[0].device_kind
    except Exception:  # no backend: no ceilings
        return None


if __name__ == "__main__":
    sys.exit(main())
