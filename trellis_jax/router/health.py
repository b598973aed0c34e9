"""Periodic health checks and the optional watched workers file.

Every `interval_s` each member's `GET /health` is called (timeout `timeout_s`): a 200 brings a dropped worker
back into routing, anything else (another status, no answer) counts as a failed check, and
`WorkerPool.failures_to_drop` failures in a row drop it. A worker that rejoins starts with an empty prefix
index: a restarted server has an empty cache.

`--workers-file`: one worker URL per line (`#` comments, blank lines ignored), re-read whenever its mtime
changes; workers that appear are added, workers that disappear from it are removed (but not those given
with --worker or added by the admin endpoint). A line that is not a worker URL is logged and skipped,
the rest of the file still applies.
"""

from __future__ import annotations

import asyncio
import logging
import os

from trellis_jax.router.upstream import Upstream, UpstreamError
from trellis_jax.router.workers import Worker, WorkerPool, normalise_url

logger = logging.getLogger(__name__)


async def check(worker: Worker, timeout_s: float) -> bool:
    try:
        upstream = await Upstream.open(
            worker.address, "GET", "/health", [], connect_timeout_s=timeout_s, read_timeout_s=timeout_s
        )
    except UpstreamError:
        return False
    try:
        await asyncio.wait_for(upstream.read_all(), timeout_s)
    except (UpstreamError, TimeoutError):
        return False
    finally:
        upstream.close()
    return upstream.status == 200


class HealthChecker:
    def __init__(self, pool: WorkerPool, index, *, interval_s: float = 2.0, timeout_s: float = 2.0, workers_file=None):
        if interval_s <= 0 or timeout_s <= 0:
            raise ValueError(f"health interval and timeout must be > 0, got {interval_s} and {timeout_s}")
        self.pool, self.index = pool, index
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self.workers_file = workers_file
        self._file_mtime: float | None = None
        self._from_file: set[str] = set()

    async def run_once(self) -> None:
        self.sync_file()
        workers = self.pool.all
        results = await asyncio.gather(*(check(w, self.timeout_s) for w in workers))
        for worker, ok in zip(workers, results):
            if self.pool.get(worker.url) is not worker:
                continue  # removed while being checked
            if ok and self.pool.check_passed(worker):
                self.index.forget(worker.url)
                logger.info("worker %s is healthy again: back in routing", worker.url)
            elif not ok and self.pool.check_failed(worker):
                self.index.forget(worker.url)
                logger.warning("worker %s failed its health check: dropped from routing", worker.url)

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # a bug here must not stop the checks for good
                logger.exception("health check round failed")
            await asyncio.sleep(self.interval_s)

    def sync_file(self) -> None:
        """Apply the workers file if it changed since the last look (mutates the pool)."""
        if self.workers_file is None:
            return
        try:
            mtime = os.stat(self.workers_file).st_mtime
        except OSError as error:
            logger.warning("cannot read the workers file %s: %s", self.workers_file, error)
            return
        if mtime == self._file_mtime:
            return
        self._file_mtime = mtime
        wanted = set()
        with open(self.workers_file) as f:
            for line in f:
                text = line.split("#", 1)[0].strip()
                if not text:
                    continue
                try:
                    wanted.add(normalise_url(text))
                except ValueError as error:
                    logger.warning("workers file %s: %s", self.workers_file, error)
        added = wanted - {w.url for w in self.pool.all}
        for url in added:
            self.pool.add(url)
        for url in self._from_file - wanted:
            self.pool.remove(url)
            self.index.forget(url)
        self._from_file = (self._from_file & wanted) | added
