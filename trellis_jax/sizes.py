"""Byte sizes as people write them: `parse_bytes(1048576 | "1048576" | "512MiB" | "2GB") -> int`.

Stdlib only: the engine's options (kv_memory, kv_host_bytes) and the on-disk caches' caps (disk_lru.py)
read sizes the same way. A value it cannot read is a ValueError that quotes it.
"""

from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(value: int | str) -> int:
    """1048576, "1048576", "512MiB", "2GB" -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read {value!r} as a memory size (e.g. 536870912, '512MiB', '2GB')")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
