"""One page on disk: a self-checking record (header, metadata, KV payload), encoded and verified here.

Layout (little-endian), one file per page:

    0   magic b"TKVP"                 4 bytes
    4   format version                u16, then u16 zero
    8   metadata length M             u32
    12  payload length N              u64
    20  crc32 of all that follows     u32
    24  metadata: JSON, UTF-8         M bytes  {key, parent, tokens, namespace, dtype, shape, fingerprint}
    .   zero padding to a multiple of 64
    .   payload: the page's bytes     N bytes  (C order, `dtype`, `shape`)

The checksum covers everything after the fixed header (padding included), so a flipped byte anywhere, a truncated file or a
header pointing past the end is refused. The metadata carries the key (a file renamed onto another key is
refused) and the store's fingerprint digest (a file copied in from another model's directory is refused).
crc32 detects accidental damage, not tampering: the directory is trusted like the weights file is.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass

import ml_dtypes  # noqa: F401  (registers "bfloat16" and the other ml_dtypes names with numpy)
import numpy as np

from trellis_jax.kvstore.api import PageEntry

MAGIC = b"TKVP"
FORMAT_VERSION = 1
_FIXED = struct.Struct("<4sHHIQI")
HEADER_BYTES = _FIXED.size  # 24
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
    meta = json.dumps(
        {
            "key": entry.key.hex(),
            "parent": None if entry.parent is None else entry.parent.hex(),
            "tokens": list(entry.tokens),
            "namespace": entry.namespace,
            "dtype": page.dtype.name,
            "shape": list(page.shape),
            "fingerprint": fingerprint_digest,
        },
        separators=(",", ":"),
    ).encode("utf-8")
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
    if len(head) < HEADER_BYTES + meta_len:
        raise DamagedPage("truncated inside its metadata")
    try:
        meta = json.loads(head[HEADER_BYTES : HEADER_BYTES + meta_len])
        entry = PageEntry(
            key=bytes.fromhex(meta["key"]),
            parent=None if meta["parent"] is None else bytes.fromhex(meta["parent"]),
            tokens=tuple(int(t) for t in meta["tokens"]),
            namespace=str(meta["namespace"]),
        )
        dtype, shape = np.dtype(meta["dtype"]), tuple(int(d) for d in meta["shape"])
        digest = meta["fingerprint"]
    except (ValueError, KeyError, TypeError) as err:
        raise DamagedPage(f"unreadable metadata ({err})") from None
    if dtype.hasobject:
        raise DamagedPage("an object dtype is not a KV page")
    if entry.key != key:
        raise DamagedPage(f"holds key {entry.key.hex()}, not {key.hex()}")
    if digest != fingerprint_digest:
        raise DamagedPage(f"written under fingerprint {digest}, not {fingerprint_digest}")
    if dtype.itemsize * math.prod(shape) != payload_len:
        raise DamagedPage(f"payload of {payload_len} bytes does not hold {dtype.name}{list(shape)}")
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
