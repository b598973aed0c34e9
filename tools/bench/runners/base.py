"""What every runner implements and returns.

A `Runner` is one system under test (an engine plus its configuration). The harness calls `start()`
once (load weights, warm up/compile), then per measured run: `reset()` (cold prefix cache), then
`run_wave(requests, t0)` for each wave in order. `run_wave` returns one `RequestResult` per request,
with times in seconds relative to `t0` (the run's start on `time.perf_counter`); a request's arrival
is the moment its wave was submitted, so TTFT includes queueing behind earlier requests of the wave.
`memory()` reports the KV bytes the system holds now (`kv_bytes`, None if not separable from the
process) and the pid whose RSS the harness samples (the server process for HTTP runners).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field


@dataclass
class RequestResult:
    id: str
    wave: int
    arrival_s: float
    first_token_s: float
    finish_s: float
    num_prompt_tokens: int
    num_output_tokens: int
    prompt_tokens_computed: int | None  # None: the system does not say
    output_token_ids: list[int] = field(default_factory=list)

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.arrival_s


@dataclass
class MemoryView:
    kv_bytes: int | None  # KV held now (cache pages / DynamicCaches / context + RAM cache)
    pid: int  # process to sample RSS from


class Runner:
    """Base class; subclasses set `name`, `description` and override the hooks."""

    name = "runner"
    description = ""

    def start(self) -> None:
        """Load weights and warm up (compile) so the measured runs see a steady system."""

    def reset(self) -> None:
        """Drop every cached prefix so the next run starts cold."""

    def run_wave(self, requests: list, t0: float) -> list[RequestResult]:
        raise NotImplementedError

    def memory(self) -> MemoryView:
        return MemoryView(kv_bytes=None, pid=os.getpid())

    def stats(self) -> dict:
        """System-specific counters of the last run (e.g. Trellis' cache hit rate)."""
        return {}

    def close(self) -> None:
        """Release the model and any server process."""


class PeakSampler:
    """Samples a process's RSS and a runner's KV bytes every `period_s` in a thread; keeps the peaks."""

    def __init__(self, runner: Runner, period_s: float = 0.05):
        self._runner = runner
        self._period_s = period_s
        self._stop = threading.Event()
        self.peak_rss_bytes = 0
        self.peak_kv_bytes: int | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(self._period_s):
            self._sample()

    def _sample(self) -> None:
        view = self._runner.memory()
        rss = _rss_bytes(view.pid)
        if rss is not None:
            self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        if view.kv_bytes is not None:
            self.peak_kv_bytes = max(self.peak_kv_bytes or 0, view.kv_bytes)


def _rss_bytes(pid: int) -> int | None:
    """Resident set size from /proc (Linux; no psutil needed on a bare GPU image); None if unreadable."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def now() -> float:
    return time.perf_counter()
