"""The prepared-weight cache: a GGUF file's loaded model (dequantized or packed weights, config, tokenizer)
kept on disk, so a warm start maps it instead of parsing the file and converting every tensor again.

Contract:
  load_or_build(path, dtype, weight_format, require_packed, directory, build, max_bytes=None) -> LoadedModel
      directory None: `build()` alone. Else the entry for `entry_key(...)` under `directory` when it reads
      back whole (prepared_store.read_entry); a missing entry is built with `build()` and stored; a damaged
      one (truncated, garbled, foreign) is deleted with one warning line, rebuilt and stored afresh. A
      failure to store (disk full, read-only directory) costs only the next start's speed: one warning.
      Size cap (disk_lru.py): after a store, the entries used longest ago (read or written) are deleted until
      the directory holds at most `max_bytes`; None: $TRELLIS_PREPARED_CACHE_MAX_BYTES ("64GiB" style), else
      DEFAULT_MAX_BYTES. The entry just stored and entries another process is reading are never deleted.
  entry_key(path, dtype, weight_format, require_packed) -> hex str   what an entry is valid for:
      the file: its size, its mtime_ns and the SHA-256 of its first and last 16 MiB. GGUF puts every piece
      of metadata and the whole tensor table (names, types, shapes, offsets) in the head, so a different
      model, quantization or conversion changes the head; an edit elsewhere changes mtime_ns (and the
      size or the tail, for an appended or truncated file). Only a same-size file written with a forged
      mtime_ns whose head and tail match would be missed; hashing the whole file would rule that out too,
      at ~0.7 s per GB on every start (`TRELLIS_PREPARED_CACHE=0` or `--no-prepared-cache` turn the cache off).
      The request: dtype, weight format and whether packing was required.
      The code: FORMAT, the versions of gguf, tokenizers and numpy, and the source text of every module whose
      output the entry holds (the loaders, the quantized layout, the model config, the tokenizer builders),
      so an upgrade or a local fix never reads an entry an older loader wrote.
The directory and the switch come from the command line (trellis_jax/cli.py) or EngineConfig.prepared_cache_dir.
Entries are written into a temporary directory and renamed into place, so a reader never sees half an
entry and two processes storing the same key at once both succeed (the second's copy is dropped).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable

from trellis_jax import disk_lru
from trellis_jax.checkpoints.loaded import LoadedModel
from trellis_jax.checkpoints.prepared_store import FORMAT, DamagedEntry, read_entry, write_entry

logger = logging.getLogger(__name__)

EDGE_BYTES = 16 << 20  # head and tail hashed into the key
# Modules whose output an entry holds: a change to any of them makes every entry stale.
PRODUCERS = (
    "trellis_jax.checkpoints.gguf_loader",
    "trellis_jax.checkpoints.layout",
    "trellis_jax.checkpoints.prepared_store",
    "trellis_jax.model.config",
    "trellis_jax.model.params",
    "trellis_jax.model.rope",
    "pallas_kernels.matmul.quantized",
    "pallas_kernels.matmul.kquants",
    "trellis_jax.tokenizer.gguf_builder",
    "trellis_jax.tokenizer.gguf_vocab",
    "trellis_jax.tokenizer.pretokenizers",
)
PACKAGES = ("gguf", "tokenizers", "numpy")
DEFAULT_MAX_BYTES = 64 << 30  # a few models' entries: an 8B model dequantized to bfloat16 takes ~16 GB
MAX_BYTES_ENV = "TRELLIS_PREPARED_CACHE_MAX_BYTES"


def load_or_build(
    path: str,
    dtype: str,
    weight_format: str,
    require_packed: bool,
    directory: str | None,
    build: Callable[[], LoadedModel],
    max_bytes: int | None = None,
) -> LoadedModel:
    if directory is None:
        return build()
    max_bytes = disk_lru.cap_from_env(MAX_BYTES_ENV, DEFAULT_MAX_BYTES) if max_bytes is None else max_bytes
    key = entry_key(path, dtype, weight_format, require_packed)
    entry = os.path.join(directory, key)
    loaded = _read(entry)
    if loaded is not None:
        return loaded
    loaded = build()
    if _store(entry, loaded):
        disk_lru.evict_to_cap(directory, max_bytes, keep=(key,))
    return loaded


def _read(entry: str) -> LoadedModel | None:
    """The entry's model, None on a miss (absent, evicted meanwhile, or damaged: then deleted)."""
    if not os.path.isdir(entry):
        return None
    try:
        with disk_lru.using(entry):
            loaded = read_entry(entry)
    except FileNotFoundError:
        return None
    except DamagedEntry as damage:
        logger.warning("prepared-weight cache: %s; deleted it, rebuilding", damage)
        shutil.rmtree(entry, ignore_errors=True)
        return None
    disk_lru.record_use(entry)
    return loaded


def entry_key(path: str, dtype: str, weight_format: str, require_packed: bool) -> str:
    digest = hashlib.sha256()
    stat = os.stat(path)
    with open(path, "rb") as f:
        digest.update(f.read(EDGE_BYTES))
        f.seek(max(0, stat.st_size - EDGE_BYTES))
        digest.update(f.read(EDGE_BYTES))
    request = {
        "format": FORMAT,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "edges": digest.hexdigest(),
        "dtype": str(dtype),
        "weight_format": weight_format,
        "require_packed": bool(require_packed),
        "packages": {name: _version(name) for name in PACKAGES},
        "code": code_digest(),
    }
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:32]


def code_digest() -> str:
    """SHA-256 over the source text of PRODUCERS (found without importing them)."""
    digest = hashlib.sha256()
    for name in PRODUCERS:
        spec = importlib.util.find_spec(name)
        with open(spec.origin, "rb") as f:
            digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _store(entry: str, loaded: LoadedModel) -> bool:
    """Write the entry; -> whether it is in place (written here or by another process first)."""
    parent = os.path.dirname(entry)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(dir=parent, prefix=".tmp-")
    except OSError as error:
        logger.warning("prepared-weight cache: cannot write under %s (%s); the next start rebuilds", parent, error)
        return False
    try:
        write_entry(os.path.join(staging, "entry"), loaded)
        os.rename(os.path.join(staging, "entry"), entry)
    except (OSError, TypeError) as error:
        if not os.path.isdir(entry):  # else another process stored the same entry first: nothing lost
            logger.warning("prepared-weight cache: cannot store %s (%s); the next start rebuilds", entry, error)
            return False
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    disk_lru.record_use(entry)
    return True
