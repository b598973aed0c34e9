"""Run an ASGI app under uvicorn with graceful shutdown and a cap on concurrent connections: the one launch
the server (serve/__main__.py) and the router (router/__main__.py) share. Imports nothing of trellis_jax.

    sock = bind_socket(host, port); server = make_server(app, graceful_timeout_s=, log_level=, limit_concurrency=)
    run_until_signalled(server, sock)        or, both at once: serve(app, sock, ...)
    with stop_on_signal(server): print(url_of(sock)); server.run(sockets=[sock])   (the URL printed safely)

`limit_concurrency`: once uvicorn holds that many connections (or tasks), a new request is answered 503
at once instead of queueing without bound (uvicorn counts the request's own connection: with N, up to
N - 1 others may be open). None: no cap.

SIGTERM / SIGINT (uvicorn's handlers): stop accepting connections, let in-flight requests finish for
up to `graceful_timeout_s`, then cancel what is left (the server's engine requests are aborted, pages
freed), run the app's shutdown (the server's engine thread stops) and return, so the process exits 0.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Iterator

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
    """Run `server` on `sock` until SIGTERM/SIGINT (or `server.should_exit`), then return."""
    with stop_on_signal(server):
        server.run(sockets=[sock])


@contextlib.contextmanager
def stop_on_signal(server: uvicorn.Server) -> Iterator[None]:
    """Within the block, SIGTERM/SIGINT stop `server` gracefully whenever they come: before uvicorn installs
    its handlers (its loop sees `should_exit` once it starts), while it runs (uvicorn's own handlers), and
    after its graceful shutdown, when uvicorn re-raises the signal to the handler it found: ours, a no-op on
    a finished server, so the process exits 0 instead of dying by the signal. Print the URL inside the block:
    a signal sent on reading it is then handled. Off the main thread (which alone may set handlers): nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
