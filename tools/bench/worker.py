"""One system under test in its own process, driven over a pipe by the harness.

Separate processes keep the engines from sharing threads, allocators and RSS: each worker builds its
runner (`systems.build(name, settings)`), calls `start()` (load + warm-up, not timed), then answers
`run(requests)` messages: `reset()`, all waves in order under a `PeakSampler`, and a plain-dict result.
`Worker.run` returns that dict or raises `WorkerError` (with the child's traceback) on failure or timeout.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from dataclasses import asdict

from .requests import waves
from .runners.base import PeakSampler, now


class WorkerError(RuntimeError):
    pass


class Worker:
    def __init__(self, system: str, settings: dict, start_timeout_s: float = 900.0):
        ctx = mp.get_context("spawn")
        self.system = system
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, system, settings), daemon=True)
        self._proc.start()
        self.info = self._receive(start_timeout_s, "start")

    def run(self, requests, timeout_s: float) -> dict:
        self._conn.send(("run", requests))
        return self._receive(timeout_s, "run")

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(("close", None))
                self._proc.join(timeout=60)
            except (BrokenPipeError, OSError):
                pass
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()

    def _receive(self, timeout_s: float, what: str):
        if not self._conn.poll(timeout_s):
            self._proc.kill()
            raise WorkerError(f"{self.system}: {what} timed out after {timeout_s:.0f}s (worker killed)")
        try:
            kind, payload = self._conn.recv()
        except EOFError as error:
            raise WorkerError(f"{self.system}: worker died during {what}") from error
        if kind == "error":
            raise WorkerError(f"{self.system}: {what} failed:\n{payload}")
        return payload


def _exit_when_orphaned(runner_box: list) -> None:
    """A watchdog thread: if the harness dies (killed, not closed), stop the runner and exit."""
    import os
    import threading
    import time

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        if runner_box:
            runner_box[0].close()
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _serve(conn, system: str, settings: dict) -> None:
    from .systems import build

    runner, box = None, []
    _exit_when_orphaned(box)
    try:
        runner = build(system, settings)
        box.append(runner)
        runner.start()
        conn.send(
            (
                "ok",
                {
                    "name": runner.name,
                    "description": runner.description,
                    "precision": getattr(runner, "precision", None),
                },
            )
        )
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        kind, payload = conn.recv()
        if kind == "close":
            runner.close()
            return
        try:
            conn.send(("ok", _measure(runner, payload)))
        except BaseException:
            conn.send(("error", traceback.format_exc()))


def _measure(runner, requests) -> dict:
    runner.reset()
    results = []
    with PeakSampler(runner) as sampler:
        t0 = now()
        for wave in waves(requests):
            results += runner.run_wave(wave, t0)
        wall_s = now() - t0
    return {
        "results": [asdict(r) for r in results],
        "wall_s": wall_s,
        "stats": runner.stats(),
        "kv_peak_bytes": sampler.peak_kv_bytes,
        "rss_peak_bytes": sampler.peak_rss_bytes,
    }
