"""Sizing the KV page pool from a memory budget, and the one-line report printed at start-up.

Contract: `size_kv_pool(config, page_size=, num_pages=, kv_memory_bytes=, kv_memory_fraction=,
default_pages=, kv_dtype=)` (kv_dtype: the pages' dtype, default the model's) takes at most one of the three budgets (a page count, bytes, or a fraction of the
device's free memory) and returns a `KVPoolSize`; with none it uses `default_pages`, capped at half the
free memory of an accelerator, or on a CPU host at a quarter of the available RAM and at most 4 GiB
(vLLM's CPU default: the host is shared with everything else), rounded down to a coarse step (a power of
two times 1, 1.25, 1.5 or 1.75): the pool's shape is part of every step program's key, and a host's
available RAM moves between runs, so an unrounded pool would make a warm start compile every program. The count includes the sink page 0, so usable pages are num_pages - 1. A budget too small
for two pages (the sink plus one usable page) raises ValueError.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax

MIB = 1024 * 1024
DEFAULT_FREE_FRACTION_CAP = 0.5  # accelerators
DEFAULT_HOST_FRACTION_CAP = 0.25  # CPU: the KV lives in the host RAM everything else uses too
DEFAULT_HOST_BYTES_CAP = 4 * 1024 * MIB


@dataclass(frozen=True)
class KVPoolSize:
    num_pages: int  # including the sink page 0
    page_size: int
    bytes_per_page: int  # K and V, all layers

    @property
    def num_tokens(self) -> int:
        return self.num_pages * self.page_size

    @property
    def num_bytes(self) -> int:
        return self.num_pages * self.bytes_per_page

    def describe(self) -> str:
        return (
            f"{self.num_pages} pages x {self.page_size} tokens = {self.num_tokens} tokens of KV, "
            f"{self.num_bytes / MIB:.1f} MiB (page 0 is the padding sink)"
        )


def size_kv_pool(
    config,
    *,
    page_size: int,
    num_pages: int | None = None,
    kv_memory_bytes: int | None = None,
    kv_memory_fraction: float | None = None,
    default_pages: int,
    kv_dtype: str | None = None,
) -> KVPoolSize:
    given = [
        name
        for name, value in (
            ("num_pages", num_pages),
            ("kv_memory_bytes", kv_memory_bytes),
            ("kv_memory_fraction", kv_memory_fraction),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ValueError(f"give at most one KV budget, got {given}")
    if page_size < 1:
        raise ValueError(f"page_size must be >= 1, got {page_size}")
    bytes_per_page = page_size * config.kv_bytes_per_token(kv_dtype)
    if num_pages is None:
        if kv_memory_fraction is not None:
            if not 0 < kv_memory_fraction <= 1:
                raise ValueError(f"kv_memory_fraction must be in (0, 1], got {kv_memory_fraction}")
            kv_memory_bytes = int(free_device_memory() * kv_memory_fraction)
        if kv_memory_bytes is not None:
            num_pages = kv_memory_bytes // bytes_per_page
        else:
            num_pages = min(default_pages, default_budget_bytes() // bytes_per_page)
    if num_pages < 2:
        raise ValueError(
            f"KV budget holds {num_pages} pages of {bytes_per_page} bytes; need >= 2 "
            f"(the sink page 0 and one usable page)"
        )
    return KVPoolSize(int(num_pages), page_size, bytes_per_page)


def default_budget_bytes(device: jax.Device | None = None) -> int:
    """The most KV memory taken when no budget is given."""
    device = device or jax.local_devices()[0]
    if device.platform == "cpu":
        return _coarse(min(int(free_device_memory(device) * DEFAULT_HOST_FRACTION_CAP), DEFAULT_HOST_BYTES_CAP))
    return int(free_device_memory(device) * DEFAULT_FREE_FRACTION_CAP)


def _coarse(num_bytes: int) -> int:
    """num_bytes rounded down to a power of two times 1, 1.25, 1.5 or 1.75 (at most 20% less)."""
    if num_bytes < 4:
        return num_bytes
    step = 1 << (num_bytes.bit_length() - 3)  # a quarter of the power of two below num_bytes
    return num_bytes // step * step


def free_device_memory(device: jax.Device | None = None) -> int:
    """Free bytes on `device` (allocator stats on accelerators, MemAvailable of the host on CPU)."""
    device = device or jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return _host_available_memory()


def _host_available_memory() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    raise RuntimeError("cannot tell free memory here: give num_pages or kv_memory_bytes explicitly")
