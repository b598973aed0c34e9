"""The prepared-weight cache: a GGUF file's loaded model (dequantized or packed weights, config, tokenizer)
kept on disk, so a warm start maps it instead of parsing the file and converting every tensor again.

Contract:
  load_or_build(path, dtype, weight_format, require_packed, directory, build) -> LoadedModel
      directory None: `build()` alone. Else the entry for `entry_key(...)` under `directory` when it reads
      back whole (prepared_store.read_entry); a missing entry is built with `build()` and stored; a damaged
      one (truncated, garbled, foreign) is deleted with one warning line, rebuilt and stored afresh. A
      failure to store (disk full, read-only directory) costs only the next start's speed: one warning.
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


def load_or_build(
    path: str,
    dtype: str,
    weight_format: str,
    require_packed: bool,
    directory: str | None,
    build: Callable[[], LoadedModel],
) -> LoadedModel:
    if directory is None:
        return build()
    entry = os.path.join(directory, entry_key(path, dtype, weight_format, require_packed))
    if os.path.isdir(entry):
        try:
            return read_entry(entry)
        except DamagedEntry as damage:
            logger.warning("prepared-weight cache: %s; deleted it, rebuilding", damage)
            shutil.rmtree(entry, ignore_errors=True)
    loaded = build()
    _store(entry, loaded)
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


def _store(entry: str, loaded: LoadedModel) -> None:
    parent = os.path.dirname(entry)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(dir=parent, prefix=".tmp-")
    except OSError as error:
        logger.warning("prepared-weight cache: cannot write under %s (%s); the next start rebuilds", parent, error)
        return
    try:
        write_entry(os.path.join(staging, "entry"), loaded)
        os.rename(os.path.join(staging, "entry"), entry)
    except (OSError, TypeError) as error:
        if not os.path.isdir(entry):  # else another process stored the same entry first: nothing lost
            logger.warning("prepared-weight cache: cannot store %s (%s); the next start rebuilds", entry, error)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
