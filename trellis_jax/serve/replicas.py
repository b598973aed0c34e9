"""`trellis-serve --data-parallel-size N`: N replicas of the server behind the cache-aware router.

Each replica is this same command without --data-parallel-size, as a subprocess on 127.0.0.1 and a free
port, so every engine flag (model, KV memory, keys...) applies to each replica alike. The router then
serves on --host/--port in this process; it answers 503 until a replica has loaded (each replica's
/health is 503 while loading, so the router's health checks add them as they become ready). The router
keys prompts by the model's token ids when --model is a GGUF file or a Hugging Face directory (it reads
only the tokenizer), by characters otherwise (the default model, presets, orbax directories). On exit (SIGTERM/SIGINT, or the router failing) every
replica gets SIGTERM and its graceful shutdown, then SIGKILL if it is still running after that.

Sensible only with cores or devices enough for N engines: each replica compiles and holds its own weights.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

SPLIT_FLAGS = ("--data-parallel-size", "--port", "--host")  # the replicas' own values replace these


def replica_argv(argv: list[str], port: int) -> list[str]:
    """The command line of one replica: `argv` without the flags the launcher owns, on 127.0.0.1:`port`."""
    kept, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        name = token.split("=", 1)[0]
        if name in SPLIT_FLAGS:
            skip = "=" not in token
            continue
        kept.append(token)
    return [sys.executable, "-m", "trellis_jax.serve", *kept, "--host", "127.0.0.1", "--port", str(port)]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def router_argv(ports: list[int], host: str, port: int, log_level: str, model: str | None = None) -> list[str]:
    """The router's command line; `model` a GGUF file or Hugging Face directory: prompts keyed by its token ids."""
    workers = [arg for p in ports for arg in ("--worker", f"http://127.0.0.1:{p}")]
    tokenizer = ["--tokenizer", model] if model and _is_model_path(model) else []
    return [*workers, *tokenizer, "--host", host, "--port", str(port), "--log-level", log_level]


def _is_model_path(model: str) -> bool:
    if os.path.isdir(model):
        return os.path.exists(os.path.join(model, "tokenizer.json"))
    return model.endswith(".gguf") and os.path.isfile(model)


def run_replicas(
    argv: list[str], count: int, host: str, port: int, log_level: str, graceful_s: float, model: str | None = None
) -> int:
    from trellis_jax.router.__main__ import main as router_main

    ports = free_ports(count)
    children: list[subprocess.Popen] = []
    # Until the router takes over SIGTERM/SIGINT (and after it returns), a signal unwinds through the
    # `finally` below instead of killing this process with the replicas left running.
    previous = {sig: signal.signal(sig, _unwind) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        children += [subprocess.Popen(replica_argv(argv, p)) for p in ports]
        print(f"trellis-serve: {count} replicas on ports {', '.join(map(str, ports))}, behind the router", flush=True)
        return router_main(router_argv(ports, host, port, log_level, model))
    except _Stopped:
        return 0
    finally:
        for sig in previous:  # a second signal must not cut the replicas' shutdown short
            signal.signal(sig, signal.SIG_IGN)
        stop_all(children, graceful_s + 5)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Stopped(Exception):
    pass


def _unwind(signum, frame) -> None:
    raise _Stopped()


def stop_all(children: list[subprocess.Popen], timeout_s: float) -> None:
    """SIGTERM to every child, then SIGKILL to those still running `timeout_s` later (one deadline for all)."""
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout_s
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
