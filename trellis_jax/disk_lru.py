"""A size cap for an on-disk cache: a directory whose children (files or directories) are its entries.
When a cache writes an entry, the others used longest ago are deleted until the whole fits the cap.

Contract:
  record_use(entry)    the entry was read or written now. The recorded time is the entry's mtime, set here:
                       atime is not kept on noatime/relatime mounts, and mtime means nothing else to a cache.
  using(entry)         context manager around a read: holds a shared lock on the entry, so no process evicts
                       it meanwhile. Raises FileNotFoundError when the entry is gone or being evicted (a miss).
  hold(entry) -> fd    the same lock until os.close(fd): an entry in use for as long as a process runs.
  evict_to_cap(directory, cap_bytes, keep=()) -> [paths evicted]
      while the entries' total size exceeds cap_bytes, deletes the one whose recorded use is oldest,
      skipping the names in `keep` (the entry just written) and entries a process holds (`using`, `hold`).
      An entry larger than the cap alone therefore stays. Names starting with "." (a write's staging) are
      neither counted nor evicted. An entry that cannot be deleted is skipped with one warning; it never
      raises OSError (a cap is housekeeping: the cache works without it).
  cap_from_env(variable, default) -> bytes   $variable read as a size ("64GiB", "512MB", bytes; sizes.py),
      else `default`; a value it cannot read is a ValueError naming the variable.
The locks are advisory flock(2) locks on the entry itself (a directory is opened read-only): every reader of
these caches takes one. Stdlib only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from trellis_jax.sizes import parse_bytes

logger = logging.getLogger(__name__)


def record_use(entry: str | os.PathLike) -> None:
    with contextlib.suppress(OSError):  # a vanished entry has no use to record
        os.utime(entry)


@contextlib.contextmanager
def using(entry: str | os.PathLike) -> Iterator[None]:
    fd = hold(entry)
    try:
        yield
    finally:
        os.close(fd)


def hold(entry: str | os.PathLike) -> int:
    fd = os.open(entry, os.O_RDONLY)  # FileNotFoundError: never there, or evicted already
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(entry).st_ino:  # evicted (and maybe rewritten) before the lock
            raise FileNotFoundError(errno.ENOENT, "evicted meanwhile", str(entry))
    except BlockingIOError:
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "being evicted", str(entry)) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def evict_to_cap(directory: str | os.PathLike, cap_bytes: int, keep: Iterable[str] = ()) -> list[Path]:
    keep = set(keep)
    entries = _entries(Path(directory))
    total = sum(size for _, size, _ in entries)
    evicted = []
    for _, size, path in sorted(entries):  # oldest recorded use first
        if total <= cap_bytes:
            break
        if path.name not in keep and _delete_unless_held(path):
            total -= size
            evicted.append(path)
    return evicted


def cap_from_env(variable: str, default: int) -> int:
    value = os.environ.get(variable, "").strip()
    if not value:
        return default
    try:
        cap = parse_bytes(value)
    except ValueError as error:
        raise ValueError(f"${variable}: {error}") from None
    return cap


def _entries(directory: Path) -> list[tuple[int, int, Path]]:
    """(recorded use in ns, size in bytes, path) of every entry; vanished ones are left out."""
    found = []
    try:
        children = list(os.scandir(directory))
    except OSError:
        return []
    for child in children:
        if child.name.startswith("."):
            continue
        try:
            found.append((child.stat(follow_symlinks=False).st_mtime_ns, _size(child), Path(child.path)))
        except OSError:
            continue
    return found


def _size(child: os.DirEntry) -> int:
    if not child.is_dir(follow_symlinks=False):
        return child.stat(follow_symlinks=False).st_size
    total = 0
    for root, _, files in os.walk(child.path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _delete_unless_held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # gone already (another evictor) or unreadable: not ours to count
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False  # in use
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        return True
    except OSError as error:
        logger.warning("cache cap: cannot delete %s (%s); kept it", path, error)
        return False
    finally:
        os.close(fd)
