"""Run an app under uvicorn with graceful shutdown and a cap on concurrent connections.

`limit_concurrency`: once uvicorn holds that many connections (or tasks), a new request is answered 503
at once instead of queueing without bound (uvicorn counts the request's own connection: with N, up to
N - 1 others may be open). None: no cap.

SIGTERM / SIGINT (uvicorn's handlers): stop accepting connections, let in-flight requests finish for
up to `graceful_timeout_s`, then cancel what is left (their engine requests are aborted, pages
freed), run the app's shutdown (the engine thread stops) and return, so the process exits 0.
"""

from __future__ import annotations

import signal
import socket
import threading

import uvicorn


def make_server(
    app,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    graceful_timeout_s: float = 30.0,
    log_level: str = "info",
    limit_concurrency: int | None = None,
) -> uvicorn.Server:
    if limit_concurrency is not None and limit_concurrency < 2:
        raise ValueError(
            f"limit_concurrency must be >= 2 (it counts the request's own connection), got {limit_concurrency}"
        )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=graceful_timeout_s,
        lifespan="on",
        limit_concurrency=limit_concurrency,
    )
    return uvicorn.Server(config)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 picks a free one); binding early lets the caller print the real URL."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    app,
    sock: socket.socket,
    *,
    graceful_timeout_s: float = 30.0,
    log_level: str = "info",
    limit_concurrency: int | None = None,
) -> None:
    """Serve `app` until SIGTERM/SIGINT, then shut down gracefully (returns; the caller exits 0)."""
    run_until_signalled(
        make_server(
            app, graceful_timeout_s=graceful_timeout_s, log_level=log_level, limit_concurrency=limit_concurrency
        ),
        sock,
    )


def run_until_signalled(server: uvicorn.Server, sock: socket.socket) -> None:
    """Run `server` on `sock` until SIGTERM/SIGINT (or `server.should_exit`), then return.

    uvicorn re-raises the captured signal after its graceful shutdown, to the handler that was in place
    before it started; a no-op handler there keeps that from killing the process (exit status 0
    instead of -15) once everything has been shut down properly."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _already_handled) for sig in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _already_handled(signum, frame) -> None:
    """uvicorn's graceful shutdown already acted on this signal."""
