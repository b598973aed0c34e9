"""Worker membership, health and load, as the router's event loop sees them.

A `Worker` is a server's base URL, whether it is healthy (routable), how many requests the router has
in flight on it, and how many health checks in a row it has failed. `WorkerPool` holds them in the order
they joined. A worker leaves routing when a request to it fails to connect or a health check fails
`failures_to_drop` times in a row; it comes back on the first health check that answers 200. Admin calls
(or the --workers-file) add and remove workers at run time. Everything here runs on one event loop: no
locking.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


def normalise_url(url: str) -> str:
    """`http://host:port` (no path, no trailing slash); a ValueError saying what is wrong otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise ValueError(f"a worker URL must look like http://HOST:PORT (plain HTTP, explicit port), got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"a worker URL is the server's root, without a path or query, got {url!r}")
    return f"http://{parts.netloc}"


@dataclass
class Worker:
    url: str
    healthy: bool = True  # routable; a new worker is tried at once (a failure drops it within one request)
    in_flight: int = 0
    failed_checks: int = 0

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname, parts.port


class WorkerPool:
    def __init__(self, urls: list[str] = (), failures_to_drop: int = 1):
        if failures_to_drop < 1:
            raise ValueError(f"failures_to_drop must be >= 1, got {failures_to_drop}")
        self.failures_to_drop = failures_to_drop
        self._workers: dict[str, Worker] = {}
        for url in urls:
            self.add(url)

    def add(self, url: str) -> Worker:
        """Add a worker (a ValueError for a bad URL); adding a member again returns it unchanged."""
        url = normalise_url(url)
        return self._workers.setdefault(url, Worker(url))

    def remove(self, url: str) -> Worker | None:
        """Remove a worker; -> it, or None if it was not a member (in-flight requests to it run on)."""
        return self._workers.pop(normalise_url(url), None)

    def get(self, url: str) -> Worker | None:
        return self._workers.get(url)

    @property
    def all(self) -> list[Worker]:
        return list(self._workers.values())

    @property
    def healthy(self) -> list[Worker]:
        return [w for w in self._workers.values() if w.healthy]

    def check_passed(self, worker: Worker) -> bool:
        """Record a passed health check; -> True if this brings the worker back (it had been dropped)."""
        worker.failed_checks = 0
        rejoined = not worker.healthy
        worker.healthy = True
        return rejoined

    def check_failed(self, worker: Worker) -> bool:
        """Record a failed health check; -> True if this drops the worker from routing."""
        worker.failed_checks += 1
        if worker.healthy and worker.failed_checks >= self.failures_to_drop:
            worker.healthy = False
            return True
        return False

    def request_failed(self, worker: Worker) -> bool:
        """A request could not reach the worker: drop it at once; -> True if it was routable until now."""
        was = worker.healthy
        worker.healthy = False
        return was

    def imbalance(self) -> int:
        """In-flight requests on the busiest healthy worker minus on the idlest (0 with fewer than two)."""
        loads = [w.in_flight for w in self.healthy]
        return max(loads) - min(loads) if len(loads) > 1 else 0
