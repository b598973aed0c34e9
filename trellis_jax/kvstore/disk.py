"""L3: pages on disk under `--kv-cache-dir`, one self-checking file each, that a restarted process reuses.

    DIR/manifest.json          the fingerprint the pages were written under (manifest.py)
    DIR/LOCK                   flock'ed while a store has the directory open: one process per directory
    DIR/tmp/                   pages being written; whatever a killed process left here is deleted at open
    DIR/pages/ab/ab12….kvp     one page record (page_file.py), named by its key in hex

Crash safety: a page is written to tmp/, fsync'ed (unless fsync=False), then renamed into pages/, so a reader
sees a whole file or none, and kill -9 loses only the pages not yet renamed. Nothing is trusted on the way
back in: opening scans every header (a short, foreign or misnamed file is deleted and counted), and `get`
checks the whole record's crc32 before it serves a page (a damaged one is deleted, counted, and None).

Opening a directory whose manifest records another fingerprint (or none) logs one line, deletes its pages and
counts them in `refused_corrupt` (and `refused_foreign`): they are KV of another model or configuration.

Capacity counts file bytes; past it the least recently used page goes (at open: the oldest by mtime, which
`get` refreshes). Thread-safe: TieredPageStore writes from its own thread while the caller reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pathlib
import threading
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np

from trellis_jax.kvstore import manifest
from trellis_jax.kvstore.api import PageEntry
from trellis_jax.kvstore.checks import check_put
from trellis_jax.kvstore.order import parents_first
from trellis_jax.kvstore.page_file import HEADER_BYTES, DamagedPage, PageRecord, decode, encode, parse_header

log = logging.getLogger(__name__)
SUFFIX = ".kvp"


class DiskPageStore:
    tier = "disk"

    def __init__(self, directory: str | os.PathLike, fingerprint: dict[str, str], capacity_bytes: int, *, fsync=True):
        if not isinstance(capacity_bytes, int) or capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be an int >= 0, got {capacity_bytes!r}")
        self.fingerprint = manifest.with_format_version(fingerprint)
        self.digest = manifest.digest_of(self.fingerprint)
        self.directory = pathlib.Path(directory)
        self.capacity_bytes = capacity_bytes
        self.fsync = fsync
        self._lock = threading.Lock()
        self._index: OrderedDict[bytes, tuple[PageEntry, int]] = OrderedDict()  # key -> (entry, file bytes); LRU first
        self._bytes = 0
        self._dirty: set[pathlib.Path] = set()  # directories with renames not yet fsync'ed
        self._closed = False
        self._counts = dict.fromkeys(
            ("hits", "misses", "bytes_read", "bytes_written", "evicted", "refused_corrupt", "refused_foreign"), 0
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_directory(self.directory)
        try:
            self._open_contents()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- the PageStore protocol --------------------------------------------------------------------------------

    def put(self, entry: PageEntry, page: np.ndarray) -> bool:
        """Write `page` durably (temporary file, fsync, rename); may evict the least recently used pages."""
        check_put(entry, page)
        with self._lock:
            if self._closed or entry.key in self._index:
                return not self._closed
        head, payload = encode(entry, page, self.digest)
        size = len(head) + payload.nbytes
        if size > self.capacity_bytes:
            return False
        path = self._path(entry.key)
        temporary = self.directory / "tmp" / f"{entry.key.hex()}.{threading.get_ident()}.tmp"
        with open(temporary, "wb") as out:
            out.write(head)
            out.write(payload)
            if self.fsync:
                out.flush()
                os.fsync(out.fileno())
        path.parent.mkdir(exist_ok=True)
        os.replace(temporary, path)
        with self._lock:
            self._dirty.add(path.parent)
            if entry.key not in self._index:
                self._index[entry.key] = (entry, size)
                self._bytes += size
                self._counts["bytes_written"] += size
                self._evict_past_capacity()
        return True

    def get(self, key: bytes) -> np.ndarray | None:
        """The page after its checksum passed; None when absent or damaged (then deleted and counted)."""
        with self._lock:
            if key not in self._index:
                self._counts["misses"] += 1
                return None
            self._index.move_to_end(key)
        path = self._path(key)
        try:
            data = _read_all(path)
            entry, page = decode(data, key, self.digest)
        except FileNotFoundError:  # discarded or evicted meanwhile
            with self._lock:
                self._counts["misses"] += 1
            return None
        except (DamagedPage, OSError) as err:
            log.warning("kv cache: refusing damaged page %s: %s", path, err)
            with self._lock:
                self._drop(key)
                self._counts["refused_corrupt"] += 1
                self._counts["misses"] += 1
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # a restart evicts by mtime: keep it the recency order
        with self._lock:
            self._counts["hits"] += 1
            self._counts["bytes_read"] += len(data)
        return page

    def __contains__(self, key: bytes) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def entry(self, key: bytes) -> PageEntry | None:
        held = self._index.get(key)
        return None if held is None else held[0]

    def discard(self, key: bytes) -> None:
        with self._lock:
            self._drop(key)

    def keys_by_recency(self) -> list[bytes]:
        """Every key held, least recently used first (at open: by file mtime, which `get` refreshes)."""
        with self._lock:
            return list(self._index)

    def entries(self) -> Iterator[PageEntry]:
        with self._lock:
            held = [entry for entry, _ in self._index.values()]
        return iter(parents_first(held))

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "pages": len(self._index),
                "bytes": self._bytes,
                **self._counts,
                "capacity_bytes": self.capacity_bytes,
            }

    def flush(self) -> None:
        """Make the renames of every accepted put durable (the pages' own bytes were fsync'ed by put)."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        if self.fsync:
            for directory in sorted(dirty):
                with contextlib.suppress(FileNotFoundError):
                    manifest.fsync_directory(directory)

    def close(self) -> None:
        """Flush, release the directory; later puts return False. The pages stay for the next process."""
        if self._closed:
            return
        self.flush()
        with self._lock:
            self._closed = True
        os.close(self._lock_fd)

    def __enter__(self) -> DiskPageStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- opening a directory -----------------------------------------------------------------------------------

    def _open_contents(self) -> None:
        (self.directory / "pages").mkdir(exist_ok=True)
        (self.directory / "tmp").mkdir(exist_ok=True)
        for partial in (self.directory / "tmp").iterdir():  # writes a killed process never renamed
            partial.unlink()
        files = _page_files(self.directory / "pages")
        recorded = manifest.read(self.directory)
        differing = manifest.differences(recorded, self.fingerprint)
        if differing and (files or recorded is not None):
            log.warning(
                "kv cache: %s was written under another fingerprint (differs in: %s): refusing its %d pages",
                self.directory,
                ", ".join(differing),
                len(files),
            )
            for path in files:
                os.unlink(path)
            self._counts["refused_corrupt"] += len(files)
            self._counts["refused_foreign"] += len(files)
            files = []
        if differing:
            manifest.write(self.directory, self.fingerprint)
        self._index_files(files)

    def _index_files(self, files: list[str]) -> None:
        found, refused = [], 0
        for path in files:
            try:
                key = bytes.fromhex(os.path.basename(path)[: -len(SUFFIX)])
                record, mtime_ns = _read_record(path, key, self.digest)
            except (ValueError, OSError) as err:  # DamagedPage is a ValueError
                log.debug("kv cache: refusing %s at open: %s", path, err)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                refused += 1
                continue
            found.append((mtime_ns, key, record.entry, record.file_bytes))
        for _, key, entry, size in sorted(found, key=lambda f: f[0]):
            self._index[key] = (entry, size)
            self._bytes += size
        if refused:
            log.warning("kv cache: refused %d damaged pages in %s", refused, self.directory)
        self._counts["refused_corrupt"] += refused
        self._evict_past_capacity()

    # -- helpers (the caller holds self._lock where it touches the index) ------------------------------------

    def _path(self, key: bytes) -> pathlib.Path:
        return page_path(self.directory, key)

    def _drop(self, key: bytes) -> bool:
        held = self._index.pop(key, None)
        if held is not None:
            self._bytes -= held[1]
            self._path(key).unlink(missing_ok=True)
        return held is not None

    def _evict_past_capacity(self) -> None:
        while self._bytes > self.capacity_bytes and self._index:
            self._drop(next(iter(self._index)))
            self._counts["evicted"] += 1


def page_path(directory: pathlib.Path, key: bytes) -> pathlib.Path:
    """Where the page keyed `key` lives under a store's directory."""
    name = key.hex()
    return directory / "pages" / name[:2] / (name + SUFFIX)


def _lock_directory(directory: pathlib.Path) -> int:
    fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"{directory} is in use by another kv page store (its LOCK is held)") from None
    return fd


def _read_all(path: pathlib.Path) -> np.ndarray:
    """The file's bytes, as uint8 (np.empty: no zero-fill of a buffer about to be overwritten)."""
    with open(path, "rb") as f:
        data = np.empty(os.fstat(f.fileno()).st_size, np.uint8)
        if f.readinto(memoryview(data)) != len(data):
            raise DamagedPage("changed size while being read")
    return data


def _page_files(pages: pathlib.Path) -> list[str]:
    """Every page file's path under pages/ (os.scandir: a restart lists thousands; pathlib costs more)."""
    found = []
    with os.scandir(pages) as shards:
        for shard in shards:
            if shard.is_dir(follow_symlinks=False):
                with os.scandir(shard.path) as names:
                    found += [f.path for f in names if f.name.endswith(SUFFIX)]
    return found


def _read_record(path: str, key: bytes, digest: str) -> tuple[PageRecord, int]:
    """A page file's header checked against its size, and its mtime_ns (the payload's crc is checked by get)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        head = os.read(fd, 4096)  # the header and, for pages of up to ~500 tokens, all the metadata
        if len(head) >= HEADER_BYTES and len(head) < HEADER_BYTES + int.from_bytes(head[8:12], "little"):
            head += os.read(fd, HEADER_BYTES + int.from_bytes(head[8:12], "little") - len(head))
        stat = os.fstat(fd)
    finally:
        os.close(fd)
    record, _ = parse_header(head, key, digest)
    if stat.st_size != record.file_bytes:
        raise DamagedPage(f"{stat.st_size} bytes where the header promises {record.file_bytes}")
    return record, stat.st_mtime_ns
