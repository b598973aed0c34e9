"""One built native library in the cache, checked against its recorded sha256 before anyone dlopens it.

Contract: an entry named `<name>` (a path without suffix, from `build`'s cache key) is two files:
`<name>.sha256`, the record (the library's sha256 in hex), and `<name>-<first 16 hex digits>.so`, the
library, named after its own content.

  store(entry, built)  moves a freshly built file into place, then writes the record; each step is an
                       atomic rename, so a reader sees no record, or a record whose library is complete.
  verified(entry)      -> the library's path when its bytes match the record; None when there is no record
                       (never built here); raises DamagedEntry saying what is wrong otherwise (library
                       missing, truncated, garbled or emptied; record unreadable).
  discard(entry)       removes the record and every library of the entry; never raises.

Why before dlopen: the loader maps the file, and touching a page past the end of a truncated library
kills the process with SIGBUS, which no `except` can catch. Because a library's name carries its digest,
two processes building the same entry at once cannot pair one's record with the other's library.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_DIGEST = re.compile(r"[0-9a-f]{64}")
_LIBRARY_TAIL = "-" + "[0-9a-f]" * 16 + ".so"


class DamagedEntry(RuntimeError):
    """A cached library that must not be loaded; the message names the file and the damage."""


def _record(entry: Path) -> Path:
    return entry.with_name(entry.name + ".sha256")


def _library(entry: Path, digest: str) -> Path:
    return entry.with_name(f"{entry.name}-{digest[:16]}.so")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_atomically(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
        tmp.write(text)
    try:
        os.chmod(tmp.name, 0o644)  # readable like the library beside it, for a cache shared between users
        os.replace(tmp.name, path)
    finally:
        Path(tmp.name).unlink(missing_ok=True)


def store(entry: Path, built: Path) -> Path:
    """Move `built` (a file in the entry's directory) into the entry; -> the library's path."""
    digest = _sha256(built)
    library = _library(entry, digest)
    os.replace(built, library)
    _write_atomically(_record(entry), digest + "\n")
    return library


def verified(entry: Path) -> Path | None:
    """The entry's library when its bytes match the record, None when nothing was recorded; else raises."""
    try:
        recorded = _record(entry).read_text().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise DamagedEntry(f"record {_record(entry)} is unreadable ({type(error).__name__}: {error})") from error
    if not _DIGEST.fullmatch(recorded):
        raise DamagedEntry(f"record {_record(entry)} holds no sha256")
    library = _library(entry, recorded)
    try:
        content = library.read_bytes()
    except FileNotFoundError as error:
        raise DamagedEntry(f"library {library} is missing") from error
    except OSError as error:
        raise DamagedEntry(f"library {library} is unreadable ({type(error).__name__}: {error})") from error
    if hashlib.sha256(content).hexdigest() != recorded:
        raise DamagedEntry(f"library {library} ({len(content)} bytes) does not match its recorded sha256")
    return library


def discard(entry: Path) -> None:
    """Remove the entry's record and libraries (a damaged library may not be the one the record names)."""
    for path in (_record(entry), *entry.parent.glob(entry.name + _LIBRARY_TAIL)):
        try:
            path.unlink(missing_ok=True)
        except OSError:  # a read-only cache: the rebuild that follows reports it
            pass
