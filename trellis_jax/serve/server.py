"""Run an app under uvicorn with graceful shutdown.

SIGTERM / SIGINT (uvicorn's handlers): stop accepting connections, let in-flight requests finish for
up to `graceful_timeout_s`, then cancel what is left (their engine requests are aborted, pages
freed), run the app's shutdown (the engine thread stops) and return, so the process exits 0.
"""

from __future__ import annotations

import socket

import uvicorn


def make_server(app, *, host: str = "127.0.0.1", port: int = 8000, graceful_timeout_s: float = 30.0,
                log_level: str = "info") -> uvicorn.Server:
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=graceful_timeout_s, lifespan="on")
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
