"""Compiled step programs serialized to disk, so a warm start loads them without tracing, lowering or compiling.

Contract:
  cache = ExecutableCache(directory, fingerprint, max_bytes=None)
      fingerprint: everything the programs depend on besides their name (`fingerprint(...)` below); entries
      live in directory/<fingerprint>/<name>. Size cap (disk_lru.py): each save deletes whole fingerprint
      directories, those used (loaded from or saved to) longest ago first, until `directory` holds at most
      `max_bytes`; None: $TRELLIS_EXECUTABLE_CACHE_MAX_BYTES ("8GiB" style), else DEFAULT_MAX_BYTES. A
      fingerprint directory some live ExecutableCache uses, in any process, is never deleted (it holds a
      shared lock on it from its first load or save until it is garbage-collected).
  cache.load(name) -> jax.stages.Compiled | None     None on a miss, or for an entry that is damaged (checksum),
      unreadable, or does not load here (its native kernels cannot be registered, the runtime refuses it):
      such an entry is deleted with one warning line and the caller compiles as on a miss.
  cache.save(name, compiled)                         best effort: a failure costs one warning line.
  compile_fresh(lowered) -> (compiled, fresh)        lowered.compile(), and whether XLA compiled it here:
      False when JAX loaded it from its persistent cache. Save only fresh executables: one that JAX's cache
      deserialized serializes again without all of its code (XLA:CPU, JAX 0.10: a later process loads it, then
      fails on its first run with "Function ... not found").
  fingerprint(*parts) -> str   a digest of `parts` (reprs) and of what every program depends on: jax and
      jaxlib versions, the backend (platform, version, device kinds), XLA_FLAGS and TRELLIS_NATIVE, the CPU's
      feature flags (XLA compiles for the host's), the matmul op's installed backend choices (choices.py), and the text of every source file a program is traced from
      (trellis_jax/model, trellis_jax/runner, pallas_kernels: .py, .cc, .h), so any code change starts afresh.
Why beside JAX's persistent compile cache: that cache still traces and lowers every program to find its key
(most of a warm start's warm-up on CPU); this one is keyed before tracing. An entry is a pickle written by
jax.experimental.serialize_executable plus the native FFI targets it calls; like JAX's own cache, it is
trusted: keep the directory private to the user. Written to a temporary file and renamed into place.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import pickle
import tempfile
import threading
import weakref
from pathlib import Path

import jax

from pallas_kernels.matmul import choices
from trellis_jax import disk_lru

logger = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parents[2]  # the folder holding trellis_jax/ and pallas_kernels/
SOURCE_DIRS = ("trellis_jax/model", "trellis_jax/runner", "pallas_kernels")
SOURCE_SUFFIXES = (".py", ".cc", ".h")
_DIGEST_BYTES = 32
DEFAULT_MAX_BYTES = 8 << 30  # a model's step programs take tens of MB; this keeps many code versions
MAX_BYTES_ENV = "TRELLIS_EXECUTABLE_CACHE_MAX_BYTES"


class ExecutableCache:
    def __init__(self, directory: str | os.PathLike, fingerprint: str, max_bytes: int | None = None) -> None:
        self.root = Path(directory)
        self.directory = self.root / fingerprint
        self.max_bytes = disk_lru.cap_from_env(MAX_BYTES_ENV, DEFAULT_MAX_BYTES) if max_bytes is None else max_bytes
        self._held = False

    def _hold(self) -> None:
        """Record this fingerprint's use and keep it from eviction while this object lives (once)."""
        if self._held or not self.directory.is_dir():
            return
        try:
            fd = disk_lru.hold(self.directory)
        except OSError:
            return  # evicted meanwhile: the next save makes it again
        weakref.finalize(self, os.close, fd)
        disk_lru.record_use(self.directory)
        self._held = True

    def load(self, name: str) -> jax.stages.Compiled | None:
        self._hold()
        path = self.directory / name
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            logger.warning("executable cache: cannot read %s (%s); compiling", path, error)
            return None
        try:
            return _deserialize(blob)
        except Exception as error:  # damaged bytes, a refused executable, a native kernel missing here
            path.unlink(missing_ok=True)
            logger.warning(
                "executable cache entry %s does not load (%s: %s); deleted it, compiling",
                path,
                type(error).__name__,
                str(error)[:300],
            )
            return None

    def save(self, name: str, compiled: jax.stages.Compiled) -> None:
        try:
            blob = _serialize(compiled)
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".tmp-", delete=False) as tmp:
                tmp.write(blob)
            os.replace(tmp.name, self.directory / name)
        except Exception as error:  # unwritable directory, an executable the backend cannot serialize
            logger.warning("executable cache: cannot store %s (%s: %s)", name, type(error).__name__, error)
            return
        self._hold()
        disk_lru.evict_to_cap(self.root, self.max_bytes, keep=(self.directory.name,))


_hits = threading.local()  # JAX reports a persistent-cache hit in the thread that compiles
_listening = False
_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def _count_hit(event: str, **kwargs) -> None:
    if event == _HIT_EVENT:
        _hits.count = getattr(_hits, "count", 0) + 1


def compile_fresh(lowered) -> tuple[jax.stages.Compiled, bool]:
    global _listening
    if not _listening:
        jax.monitoring.register_event_listener(_count_hit)
        _listening = True
    before = getattr(_hits, "count", 0)
    compiled = lowered.compile()
    return compiled, getattr(_hits, "count", 0) == before


def _serialize(compiled) -> bytes:
    from jax.experimental.serialize_executable import serialize

    from pallas_kernels.native.build import registered_targets

    payload = pickle.dumps((registered_targets(), *serialize(compiled)))
    return hashlib.sha256(payload).digest() + payload


def _deserialize(blob: bytes):
    from jax.experimental.serialize_executable import deserialize_and_load

    from pallas_kernels.native.build import load_target

    digest, payload = blob[:_DIGEST_BYTES], blob[_DIGEST_BYTES:]
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError("checksum mismatch (truncated or garbled)")
    targets, serialized, in_tree, out_tree = pickle.loads(payload)
    for source, symbol, target in targets:  # the custom calls must be registered before the executable loads
        load_target(source, symbol, target)
    return deserialize_and_load(serialized, in_tree, out_tree)


def fingerprint(*parts) -> str:
    digest = hashlib.sha256()
    backend = jax.devices()[0].client
    environment = (
        jax.__version__,
        importlib.metadata.version("jaxlib"),
        backend.platform,
        backend.platform_version,
        tuple(d.device_kind for d in jax.devices()),
        os.environ.get("XLA_FLAGS", ""),
        os.environ.get("TRELLIS_NATIVE", "1"),
        bool(jax.config.jax_enable_x64),
        _cpu_flags(),
        choices.signature(),  # the matmul backends calibrated or pinned for this process's shapes
    )
    for part in (*environment, *parts):
        digest.update(repr(part).encode() + b"\0")
    digest.update(source_digest().encode())
    return digest.hexdigest()[:32]


def source_digest() -> str:
    digest = hashlib.sha256()
    for folder in SOURCE_DIRS:
        for path in sorted((_ROOT / folder).rglob("*")):
            if path.suffix in SOURCE_SUFFIXES and path.is_file():
                digest.update(str(path.relative_to(_ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""
