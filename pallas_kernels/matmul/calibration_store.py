"""Where calibrate.py keeps what it measured: one small JSON file per key, so only a machine's first start
with a model's shapes pays for the timing.

Contract:
  `directory()` -> Path | None: $TRELLIS_CALIBRATION_DIR, else <$XDG_CACHE_HOME or ~/.cache>/trellis-jax/
      calibration (beside the native kernels' and the prepared weights' caches); None when calibration is
      off ($TRELLIS_CALIBRATION in 0/off/false/no), then nothing is measured or stored.
  `key(subject) -> hex`: a digest of `subject` (what was measured: weight kinds, shapes, row classes) and of
      everything a timing depends on: the CPU's feature flags and model name, jax and jaxlib versions,
      XLA_FLAGS, TRELLIS_NATIVE, and the text of the matmul op and of the native kernels, so another CPU,
      an upgrade or a kernel change measures afresh.
  `read(directory, key, parse) -> parse(record) | None`: the stored record as `parse` reads it, None when
      there is none; a file that does not parse (truncated, garbled, another key's, or `parse` raises
      ValueError, KeyError or TypeError) is deleted with one warning line and reads as None.
  `write(directory, key, record)`: best effort (a failure costs one warning line); written to a temporary
      file and renamed into place, so a reader never sees half a record.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import tempfile
from pathlib import Path

import jax

logger = logging.getLogger(__name__)

FORMAT = 1
_OFF = ("0", "off", "false", "no")
_HERE = Path(__file__).resolve().parent
_SOURCES = (_HERE, _HERE.parent / "native")  # the op's backends and the kernels they call


def directory() -> Path | None:
    if os.environ.get("TRELLIS_CALIBRATION", "").strip().lower() in _OFF:
        return None
    chosen = os.environ.get("TRELLIS_CALIBRATION_DIR")
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "trellis-jax" / "calibration"


def _cpu() -> tuple[str, str]:
    """(model name, feature flags) of this CPU, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            lines = cpuinfo.readlines()
    except OSError:
        return platform.processor(), platform.machine()
    first = {}
    for line in lines:
        name, _, value = line.partition(":")
        first.setdefault(name.strip(), value.strip())
    return first.get("model name", platform.processor()), first.get("flags", first.get("Features", ""))


def _source_digest() -> str:
    digest = hashlib.sha256()
    for folder in _SOURCES:
        for path in sorted(folder.iterdir()):
            if path.suffix in (".py", ".cc", ".h") and path.is_file():
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def key(subject) -> str:
    material = (
        FORMAT,
        _cpu(),
        jax.__version__,
        importlib.metadata.version("jaxlib"),
        os.environ.get("XLA_FLAGS", ""),
        os.environ.get("TRELLIS_NATIVE", "1"),
        _source_digest(),
        subject,
    )
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=repr).encode()).hexdigest()[:32]


def _path(where: Path, name: str) -> Path:
    return where / f"{name}.json"


def read(where: Path, name: str, parse):
    path = _path(where, name)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        logger.warning("matmul calibration cache: cannot read %s (%s); measuring again", path, error)
        return None
    try:
        record = json.loads(text)
        if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("key") != name:
            raise ValueError("not a calibration record for this key")
        return parse(record)
    except (ValueError, KeyError, TypeError) as error:
        logger.warning("matmul calibration cache: %s is damaged (%s); deleted it, measuring again", path, error)
        path.unlink(missing_ok=True)
        return None


def write(where: Path, name: str, record: dict) -> None:
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=where, suffix=".tmp", delete=False) as tmp:
            json.dump({**record, "format": FORMAT, "key": name}, tmp, indent=1, sort_keys=True)
        os.replace(tmp.name, _path(where, name))
    except OSError as error:
        logger.warning("matmul calibration cache: cannot store %s in %s (%s)", name, where, error)
