"""Throughput of the KV page stores (host only, no device): not a test; numbers go to the kvstore report.

Measures, on pages of one shape (default: SmolLM2-135M's, 30 layers x 3 KV heads x 16 tokens x 64, float32,
720 KiB), MB/s of page bytes for:
- crc32 over a page (the disk record's checksum) and sha256 (the weights hash);
- HostPageStore put and get (get copies the page out of the slab);
- DiskPageStore put (fsync on and off) and get (the page cache warm, and cold: each file dropped from the
  page cache with posix_fadvise first, so the read reaches the device);
- TieredPageStore put with write-back (host a quarter of the pages): the caller's rate, then until flush().
Wall time, best of --repeats; the machine is shared, so compare rows of one run only.
Usage: python tools/bench_kvstore.py [--pages 256] [--shape 2,30,3,16,64] [--dtype float32] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import tempfile
import time
import zlib

import numpy as np

from trellis_jax.kvstore import DiskPageStore, HostPageStore, PageEntry, TieredPageStore, chain_key
from trellis_jax.kvstore.disk import page_path

FINGERPRINT = {"bench": "1"}


def pages_of(num_pages, shape, dtype):
    rng = np.random.default_rng(0)
    entries, parent = [], None
    for i in range(num_pages):
        tokens = tuple(range(i * shape[3], (i + 1) * shape[3]))
        key = chain_key(parent, tokens, "")
        entries.append(PageEntry(key, parent, tokens, ""))
        parent = key
    return entries, [rng.standard_normal(shape).astype(dtype) for _ in range(num_pages)]


def best_rate(run, total_bytes, repeats):
    """MB/s of the fastest of `repeats` runs of run()."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return total_bytes / best / 1e6


def get_each(store, entries):
    """Get every page, dropping each as the caller would after copying it to the device: memory is reused."""
    for entry in entries:
        assert store.get(entry.key) is not None


def drop_from_page_cache(directory, entries):
    for entry in entries:
        fd = os.open(page_path(directory, entry.key), os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def measure(args) -> list[tuple[str, float]]:
    shape = tuple(int(d) for d in args.shape.split(","))
    entries, pages = pages_of(args.pages, shape, np.dtype(args.dtype))
    total = sum(p.nbytes for p in pages)
    rows = [
        ("crc32", best_rate(lambda: [zlib.crc32(p.view(np.uint8)) for p in pages], total, args.repeats)),
        ("sha256", best_rate(lambda: [hashlib.sha256(p.view(np.uint8)).digest() for p in pages], total, args.repeats)),
    ]

    host = HostPageStore(total)

    def host_put():  # into the allocated slab, as in steady state (the first fill also faults its memory in)
        for e in entries:
            host.discard(e.key)
        for e, p in zip(entries, pages):
            host.put(e, p)

    host_put()
    rows.append(("host put", best_rate(host_put, total, args.repeats)))
    rows.append(("host get", best_rate(lambda: get_each(host, entries), total, args.repeats)))

    base = pathlib.Path(args.dir) if args.dir else pathlib.Path(tempfile.mkdtemp(prefix="bench_kvstore_"))
    runs = iter(range(10**6))
    for fsync in (True, False):

        def disk_put(fsync=fsync):  # a fresh directory per repeat: nothing to delete inside the timed part
            with DiskPageStore(base / f"disk-{next(runs)}", FINGERPRINT, 4 * total, fsync=fsync) as disk:
                for e, p in zip(entries, pages):
                    disk.put(e, p)
                disk.flush()

        rows.append((f"disk put (fsync={fsync})", best_rate(disk_put, total, args.repeats)))
    with DiskPageStore(base / "disk-0", FINGERPRINT, 4 * total) as disk:
        rows.append(("disk get (page cache warm)", best_rate(lambda: get_each(disk, entries), total, 3)))

        def cold_get():
            drop_from_page_cache(disk.directory, entries)
            start = time.perf_counter()
            get_each(disk, entries)
            return time.perf_counter() - start

        rows.append(("disk get (cold, fadvise DONTNEED)", total / min(cold_get() for _ in range(3)) / 1e6))

    directory = base / "tiered"
    store = TieredPageStore(HostPageStore(total // 4), DiskPageStore(directory, FINGERPRINT, 4 * total))
    start = time.perf_counter()
    for e, p in zip(entries, pages):
        store.put(e, p)
    caller = time.perf_counter() - start
    store.flush()
    flushed = time.perf_counter() - start
    stats = store.stats()
    store.close()
    rows.append(("tiered put, caller (write-back)", total / caller / 1e6))
    rows.append(("tiered put, until flush()", total / flushed / 1e6))
    rows.append(("  (write-back dropped pages)", float(stats["writeback_dropped"])))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=256)
    parser.add_argument("--shape", default="2,30,3,16,64", help="K/V, layers, KV heads, page size, head dim")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", help="where the disk stores write (default: a new temporary directory)")
    args = parser.parse_args()
    for name, rate in measure(args):
        print(f"{name:36s} {rate:10.0f}" + (" MB/s" if not name.startswith(" ") else ""))


if __name__ == "__main__":
    main()
