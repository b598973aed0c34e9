"""`fingerprint_of`: the dict a DiskPageStore is opened with, built from plain values.

It names everything that changes KV but is not in a page key: the weights (a hash of their contents), the
tokenizer file, the chat template, the compute and KV dtypes, the page size and the RoPE configuration. Two
processes whose fingerprints are equal produce the same KV for the same page key.

Hashing a 5 GB weights file costs seconds, so each file's digest is cached in `hash_cache_dir` (the store's
directory) by (real path, size, mtime_ns): a restart with the same file re-hashes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Mapping, Sequence

HASH_CACHE_NAME = "file-hashes.json"
PathLike = str | os.PathLike


def fingerprint_of(
    *,
    weights: PathLike | Sequence[PathLike],
    tokenizer: PathLike | None,
    chat_template: str | None,
    dtype: str,
    kv_dtype: str,
    page_size: int,
    rope: Mapping[str, object],
    arithmetic: Mapping[str, object] | None = None,
    hash_cache_dir: PathLike | None = None,
) -> dict[str, str]:
    """Fingerprint fields, each a str. `weights`: a file, or the files of a sharded checkpoint (hashed in the
    order given); `tokenizer`: its file (None when it lives inside the weights, as in GGUF); `rope`: the
    model's RoPE parameters (theta, scaling...), any JSON-serializable mapping; `arithmetic`: the engine settings
    that change how KV is computed from the same weights (weight format, quantization, tensor parallelism...),
    any JSON-serializable mapping, so pages computed another way are not served as a cold run's."""
    for name, value in (("dtype", dtype), ("kv_dtype", kv_dtype)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty dtype name, got {value!r}")
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise ValueError(f"page_size must be an int >= 1, got {page_size!r}")
    if chat_template is not None and not isinstance(chat_template, str):
        raise ValueError(f"chat_template must be the template's text or None, got {type(chat_template).__name__}")
    if not isinstance(rope, Mapping):
        raise ValueError(f"rope must be a mapping of RoPE parameters, got {rope!r}")
    if arithmetic is not None and not isinstance(arithmetic, Mapping):
        raise ValueError(f"arithmetic must be a mapping of engine settings, got {arithmetic!r}")
    files = [weights] if isinstance(weights, (str, os.PathLike)) else list(weights)
    if not files:
        raise ValueError("weights names no file")
    cache = _HashCache(pathlib.Path(hash_cache_dir) if hash_cache_dir is not None else None)
    digests = [cache.digest(pathlib.Path(f)) for f in files]
    fingerprint = {
        "weights": digests[0] if len(digests) == 1 else hashlib.sha256("\n".join(digests).encode()).hexdigest(),
        "tokenizer": "none" if tokenizer is None else cache.digest(pathlib.Path(tokenizer)),
        "chat_template": "none" if chat_template is None else hashlib.sha256(chat_template.encode()).hexdigest(),
        "dtype": dtype,
        "kv_dtype": kv_dtype,
        "page_size": str(page_size),
        "rope": json.dumps(dict(rope), sort_keys=True, separators=(",", ":")),
        "arithmetic": json.dumps(dict(arithmetic or {}), sort_keys=True, separators=(",", ":")),
    }
    cache.save()
    return fingerprint


def file_digest(path: pathlib.Path) -> str:
    """sha256 of a file's contents, streamed (sha256 measured faster than blake2b here: it has CPU support)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class _HashCache:
    """File digests by (real path, size, mtime_ns), kept as JSON in a directory (nothing kept when None)."""

    def __init__(self, directory: pathlib.Path | None):
        self.path = None if directory is None else directory / HASH_CACHE_NAME
        self.known: dict[str, dict] = {}
        self.changed = False
        if self.path is not None:
            try:
                loaded = json.loads(self.path.read_text("utf-8"))
                self.known = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self.known = {}  # absent or damaged: hash again

    def digest(self, path: pathlib.Path) -> str:
        if not path.is_file():
            raise ValueError(f"{path} is not a file")
        real, stat = str(path.resolve()), path.stat()
        stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        held = self.known.get(real)
        if isinstance(held, dict) and {k: held.get(k) for k in stamp} == stamp and isinstance(held.get("sha256"), str):
            return held["sha256"]
        digest = file_digest(path)
        self.known[real] = {**stamp, "sha256": digest}
        self.changed = True
        return digest

    def save(self) -> None:
        if self.path is None or not self.changed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(self.known, indent=1, sort_keys=True), "utf-8")
        os.replace(temporary, self.path)
