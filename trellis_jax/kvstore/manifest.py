"""A disk store's manifest: the fingerprint its pages were written under, with the format version added.

The fingerprint names everything that changes KV but is not in a page key (weights, tokenizer, chat template,
dtypes, page size, RoPE config); the caller builds it (`fingerprint_of`). Its digest goes into every page
record too, so a page file copied in from another directory is refused on its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

from trellis_jax.kvstore.page_file import FORMAT_VERSION

MANIFEST_NAME = "manifest.json"


def with_format_version(fingerprint: dict[str, str]) -> dict[str, str]:
    """`fingerprint` checked (str -> str) and completed with the page format version."""
    if not isinstance(fingerprint, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in fingerprint.items()
    ):
        raise ValueError(f"a fingerprint maps str to str, got {fingerprint!r}")
    if "format_version" in fingerprint and fingerprint["format_version"] != str(FORMAT_VERSION):
        raise ValueError(
            f"format_version is the store's to set ({FORMAT_VERSION}), not {fingerprint['format_version']!r}"
        )
    return {**fingerprint, "format_version": str(FORMAT_VERSION)}


def digest_of(fingerprint: dict[str, str]) -> str:
    """A short stable digest of a complete fingerprint (key order does not matter)."""
    canonical = json.dumps(fingerprint, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(canonical).hexdigest()[:32]


def read(directory: pathlib.Path) -> dict[str, str] | None:
    """The fingerprint the directory's manifest records; None when there is none or it is unreadable."""
    try:
        found = json.loads((directory / MANIFEST_NAME).read_text("utf-8"))["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found if isinstance(found, dict) else None


def write(directory: pathlib.Path, fingerprint: dict[str, str]) -> None:
    """Replace the manifest atomically (temporary file, fsync, rename, fsync of the directory)."""
    temporary = directory / (MANIFEST_NAME + ".tmp")
    with open(temporary, "w", encoding="utf-8") as out:
        json.dump({"fingerprint": fingerprint, "digest": digest_of(fingerprint)}, out, indent=1, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, directory / MANIFEST_NAME)
    fsync_directory(directory)


def differences(old: dict[str, str] | None, new: dict[str, str]) -> list[str]:
    """The fingerprint fields that differ (every field when there is no readable old manifest)."""
    if old is None:
        return ["manifest"]
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def fsync_directory(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
