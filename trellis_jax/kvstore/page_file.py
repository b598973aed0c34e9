"""One page on disk: a self-checking record (header, metadata, KV payload), encoded and verified here.

Layout (little-endian), one file per page:

    0   magic b"TKVP"                 4 bytes
    4   format version (2)            u16, then u16 zero
    8   metadata length M             u32
    12  payload length N              u64
    20  crc32 of all that follows     u32
    24  metadata, M bytes:
          key 16 bytes, parent 16 bytes (zeros when none), fingerprint digest 16 bytes,
          flags u8 (bit 0: has a parent), ndim u8, dtype name length u8, namespace length u16,
          token count u32; then the dtype name (ASCII), the shape (u64 each), the tokens (i64 each),
          the namespace (UTF-8)
    .   zero padding to a multiple of 64
    .   payload: the page's bytes     N bytes  (C order, `dtype`, `shape`)

The checksum covers everything after the fixed header (padding included), so a flipped byte anywhere, a truncated file or a
header pointing past the end is refused. The metadata carries the key (a file renamed onto another key is
refused) and the store's fingerprint digest (a file copied in from another model's directory is refused).
crc32 detects accidental damage, not tampering: the directory is trusted like the weights file is.
Why binary, not JSON (format 1): a restart parses every file's metadata when it opens the directory, and
JSON's parse and its token list cost most of that (docs/benchmarks/tiers.md). A file of another format
version is refused (DamagedPage) like a damaged one; a directory of another version is refused whole by its
manifest, whose fingerprint carries the version.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import ml_dtypes  # noqa: F401  (registers "bfloat16" and the other ml_dtypes names with numpy)
import numpy as np

from trellis_jax.kvstore.api import PAGE_KEY_BYTES, PageEntry

MAGIC = b"TKVP"
FORMAT_VERSION = 2
_FIXED = struct.Struct("<4sHHIQI")
HEADER_BYTES = _FIXED.size  # 24
_META = struct.Struct(f"<{PAGE_KEY_BYTES}s{PAGE_KEY_BYTES}s16sBBBHI")  # key, parent, digest, flags, ndim, ...
_HAS_PARENT = 1
_ALIGN = 64


class DamagedPage(ValueError):
    """The bytes read are not a whole, valid page record for the key and fingerprint expected."""


@dataclass(frozen=True)
class PageRecord:
    entry: PageEntry
    dtype: np.dtype
    shape: tuple[int, ...]
    payload_offset: int
    payload_bytes: int

    @property
    def file_bytes(self) -> int:
        return self.payload_offset + self.payload_bytes


def encode(entry: PageEntry, page: np.ndarray, fingerprint_digest: str) -> tuple[bytes, memoryview]:
    """(header + metadata + padding, payload view): write both, in order, to make the file."""
    page = np.ascontiguousarray(page)
    dtype, namespace = page.dtype.name.encode("ascii"), entry.namespace.encode("utf-8")
    tokens = np.asarray(entry.tokens, dtype="<i8")
    fixed = _META.pack(
        entry.key,
        entry.parent or b"\0" * PAGE_KEY_BYTES,
        bytes.fromhex(fingerprint_digest),
        _HAS_PARENT if entry.parent is not None else 0,
        page.ndim,
        len(dtype),
        len(namespace),
        len(tokens),
    )
    meta = fixed + dtype + struct.pack(f"<{page.ndim}Q", *page.shape) + tokens.tobytes() + namespace
    payload = memoryview(page.reshape(-1).view(np.uint8))  # bytes view: the buffer protocol has no bfloat16
    pad = b"\0" * (-(HEADER_BYTES + len(meta)) % _ALIGN)
    crc = zlib.crc32(payload, zlib.crc32(meta + pad))
    return _FIXED.pack(MAGIC, FORMAT_VERSION, 0, len(meta), payload.nbytes, crc) + meta + pad, payload


def parse_header(head: bytes, key: bytes, fingerprint_digest: str) -> tuple[PageRecord, int]:
    """The record `head` (the file's first bytes, at least the metadata) describes, and its crc32.

    Raises DamagedPage when the header is short, foreign, of another format, or names another key or fingerprint.
    """
    if len(head) < HEADER_BYTES:
        raise DamagedPage(f"{len(head)} bytes: shorter than the {HEADER_BYTES}-byte header")
    magic, version, _, meta_len, payload_len, crc = _FIXED.unpack_from(head)
    if magic != MAGIC or version != FORMAT_VERSION:
        raise DamagedPage(f"not a format-{FORMAT_VERSION} page record (magic {magic!r}, version {version})")
    if len(head) < HEADER_BYTES + meta_len or meta_len < _META.size:
        raise DamagedPage("truncated inside its metadata")
    found, parent, digest, flags, ndim, dtype_len, ns_len, num_tokens = _META.unpack_from(head, HEADER_BYTES)
    if found != key:
        raise DamagedPage(f"holds key {found.hex()}, not {key.hex()}")
    if digest.hex() != fingerprint_digest:
        raise DamagedPage(f"written under fingerprint {digest.hex()}, not {fingerprint_digest}")
    at = HEADER_BYTES + _META.size
    ends = (at + dtype_len, at + dtype_len + 8 * ndim, at + dtype_len + 8 * (ndim + num_tokens))
    if ends[2] + ns_len != HEADER_BYTES + meta_len:
        raise DamagedPage(f"metadata of {meta_len} bytes does not hold what its lengths state")
    try:
        dtype = np.dtype(head[at : ends[0]].decode("ascii"))
        shape = struct.unpack_from(f"<{ndim}Q", head, ends[0])
        tokens = tuple(np.frombuffer(head, "<i8", num_tokens, ends[1]).tolist())
        namespace = head[ends[2] : ends[2] + ns_len].decode("utf-8")
    except (ValueError, TypeError) as err:  # UnicodeDecodeError is a ValueError
        raise DamagedPage(f"unreadable metadata ({err})") from None
    if dtype.hasobject:
        raise DamagedPage("an object dtype is not a KV page")
    if dtype.itemsize * math.prod(shape) != payload_len:
        raise DamagedPage(f"payload of {payload_len} bytes does not hold {dtype.name}{list(shape)}")
    entry = PageEntry(key=found, parent=parent if flags & _HAS_PARENT else None, tokens=tokens, namespace=namespace)
    offset = HEADER_BYTES + meta_len
    offset += -offset % _ALIGN
    return PageRecord(entry, dtype, shape, offset, payload_len), crc


def decode(data: np.ndarray, key: bytes, fingerprint_digest: str) -> tuple[PageEntry, np.ndarray]:
    """The entry and page in a whole file's bytes (uint8; the page is a view of them); DamagedPage if not valid."""
    record, crc = parse_header(data[: HEADER_BYTES + _meta_bytes(data)].tobytes(), key, fingerprint_digest)
    if len(data) != record.file_bytes:
        raise DamagedPage(f"{len(data)} bytes where the header promises {record.file_bytes}")
    if zlib.crc32(data[HEADER_BYTES:]) != crc:
        raise DamagedPage("checksum mismatch")
    return record.entry, data[record.payload_offset :].view(record.dtype).reshape(record.shape)


def _meta_bytes(data: np.ndarray) -> int:
    """The metadata length a file's fixed header states (0 when the file is shorter than that header)."""
    return int(data[8:12].view("<u4")[0]) if len(data) >= HEADER_BYTES else 0
