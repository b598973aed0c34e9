"""The tier model of the simulation: capacities of L2 (host RAM) and L3 (disk) below L1 (the device pool),
their bandwidths, and the cost rule that decides whether a page found there is reloaded or recomputed.

Costs, per page of ``page_size`` tokens and ``page_bytes = page_size * kv_bytes_per_token`` bytes:
- recompute: ``page_size / prefill_tokens_per_s`` seconds (the same prefill rate as the replay's
  ``ServerModel``, 2000 tok/s by default);
- reload from L2: ``page_bytes / host_bytes_per_s`` (host -> device);
- reload from L3: ``page_bytes / disk_read_bytes_per_s + page_bytes / host_bytes_per_s`` (disk -> host ->
  device, not pipelined: the conservative end);
- demotion (write-back) costs ``page_bytes / host_bytes_per_s`` into L2 and ``page_bytes /
  disk_write_bytes_per_s`` into L3; it overlaps the device (issue 24), so it is reported as bytes and
  seconds but never charged to a request.
A page found in tier k is reloaded exactly when its reload is strictly faster than recomputing it (a tie
recomputes: no transfer for nothing). The rule is per tier, since every page of a tier costs the same.

Capacities are given in pages (``Capacity(512)``, CLI ``512``) or in bytes (``Capacity(2 << 30,
"bytes")``, CLI ``2GiB``), turned into pages per page size. 0 pages = the tier is absent.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from trellis_jax.ablate.queueing import ServerModel

# K and V of one token of the default model (SmolLM2-135M: 30 layers x 3 KV heads x 64) in bfloat16:
# trellis_jax.model.cost.kv_bytes_per_token(costs.default_model_config(), "bfloat16"), checked by a test,
# written out so a replay stays pure host Python (the model package imports jax).
DEFAULT_KV_BYTES_PER_TOKEN = 2 * 30 * 3 * 64 * 2
DEFAULT_HOST_BYTES_PER_S = 25e9  # PCIe 4.0 x16, about what pinned host memory moves in practice
DEFAULT_DISK_READ_BYTES_PER_S = 3e9  # an NVMe SSD
DEFAULT_DISK_WRITE_BYTES_PER_S = 1.5e9

_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_CAPACITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


@dataclass(frozen=True)
class Capacity:
    """A tier's size: ``amount`` pages, or ``amount`` bytes (rounded down to whole pages)."""

    amount: int
    unit: str = "pages"

    def __post_init__(self):
        if self.unit not in ("pages", "bytes"):
            raise ValueError(f"capacity unit must be 'pages' or 'bytes', got {self.unit!r}")
        if not isinstance(self.amount, int) or self.amount < 0:
            raise ValueError(f"capacity must be an int >= 0 {self.unit}, got {self.amount!r}")

    def pages(self, page_bytes: int) -> int:
        return self.amount if self.unit == "pages" else self.amount // page_bytes

    def __str__(self) -> str:
        return f"{self.amount} pages" if self.unit == "pages" else f"{self.amount} B"


def parse_capacity(text: str) -> Capacity:
    """``"512"`` -> 512 pages; ``"2GiB"``, ``"500MB"``, ``"4096B"`` -> bytes. Anything else: ValueError."""
    m = _CAPACITY.match(text)
    unit = m.group(2).lower() if m else ""
    if not m or (unit and unit not in _UNITS) or (not unit and "." in m.group(1)):
        raise ValueError(f"a tier capacity is a page count (512) or a size (2GiB, 500MB), got {text!r}")
    if not unit:
        return Capacity(int(m.group(1)))
    return Capacity(int(float(m.group(1)) * _UNITS[unit]), "bytes")


def parse_rate(text: str) -> float:
    """Bytes (or tokens) per second: ``"25e9"``, ``"3GB"`` (= 3e9), ``"2GiB"``. Anything else: ValueError."""
    m = _CAPACITY.match(text)
    unit = m.group(2).lower() if m else ""
    if m and unit in _UNITS:
        return float(m.group(1)) * _UNITS[unit]
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"a rate is a number per second (25e9) or a size (3GB, 2GiB), got {text!r}") from None


def _check_rate(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class TierConfig:
    l2: Capacity = Capacity(0)
    l3: Capacity = Capacity(0)
    host_bytes_per_s: float = DEFAULT_HOST_BYTES_PER_S
    disk_read_bytes_per_s: float = DEFAULT_DISK_READ_BYTES_PER_S
    disk_write_bytes_per_s: float = DEFAULT_DISK_WRITE_BYTES_PER_S
    prefill_tokens_per_s: float = ServerModel().prefill_tokens_per_s
    kv_bytes_per_token: int = DEFAULT_KV_BYTES_PER_TOKEN

    def __post_init__(self):
        for name in ("host_bytes_per_s", "disk_read_bytes_per_s", "disk_write_bytes_per_s", "prefill_tokens_per_s"):
            _check_rate(name, getattr(self, name))
        if not isinstance(self.kv_bytes_per_token, int) or self.kv_bytes_per_token < 1:
            raise ValueError(f"kv_bytes_per_token must be an int >= 1, got {self.kv_bytes_per_token!r}")
        if not isinstance(self.l2, Capacity) or not isinstance(self.l3, Capacity):
            raise ValueError(f"l2 and l3 must be Capacity values, got {self.l2!r}, {self.l3!r}")

    def page_bytes(self, page_size: int) -> int:
        return page_size * self.kv_bytes_per_token

    def tier_pages(self, page_size: int) -> tuple[int, int]:
        """(L2 pages, L3 pages) at this page size."""
        page_bytes = self.page_bytes(page_size)
        return self.l2.pages(page_bytes), self.l3.pages(page_bytes)

    def recompute_seconds(self, page_size: int) -> float:
        return page_size / self.prefill_tokens_per_s

    def reload_seconds(self, tier: int, page_size: int) -> float:
        """Seconds to bring one page from tier 2 (host) or 3 (disk) into the device pool."""
        page_bytes = self.page_bytes(page_size)
        host = page_bytes / self.host_bytes_per_s
        if tier == 2:
            return host
        if tier == 3:
            return page_bytes / self.disk_read_bytes_per_s + host
        raise ValueError(f"tier must be 2 or 3, got {tier!r}")

    def write_seconds(self, tier: int, page_size: int) -> float:
        """Seconds of write-back for one page demoted into tier 2 or 3 (overlapped; reported only)."""
        rate = {2: self.host_bytes_per_s, 3: self.disk_write_bytes_per_s}[tier]
        return self.page_bytes(page_size) / rate

    def reloads(self, tier: int, page_size: int) -> bool:
        """The cost rule: is a page of this tier reloaded (strictly faster than recomputing it)?"""
        return self.reload_seconds(tier, page_size) < self.recompute_seconds(page_size)

    def saving_seconds(self, tier: int, page_size: int) -> float:
        """Prefill seconds a page served from ``tier`` (1, 2 or 3) saves, net of its reload; 0 where the
        rule recomputes it."""
        if tier == 1:
            return self.recompute_seconds(page_size)
        if not self.reloads(tier, page_size):
            return 0.0
        return self.recompute_seconds(page_size) - self.reload_seconds(tier, page_size)
