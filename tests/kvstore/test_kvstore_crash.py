"""kill -9 while a disk store writes: the reopened store serves only whole, checksum-valid pages, and every page
whose put had returned before the kill."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
from kv_pages import FINGERPRINT, chain, page_for

from trellis_jax.kvstore import DiskPageStore

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SHAPE = (2, 4, 4, 16, 64)  # 256 KiB float32 pages: writes long enough for the kill to land inside some
WRITER = f"""
import sys
from kv_pages import FINGERPRINT, chain, page_for
from trellis_jax.kvstore import DiskPageStore
store = DiskPageStore(sys.argv[1], FINGERPRINT, 1 << 30)
for i, entry in enumerate(chain(100_000)):
    store.put(entry, page_for(entry, shape={SHAPE}))
    print(i, flush=True)
"""


def run_writer_and_kill(directory, pages_before_kill=30, timeout_s=30.0):
    """Start the writer, SIGKILL it once `pages_before_kill` puts have returned; the count of returned puts."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")])}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory)], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    deadline, done = time.monotonic() + timeout_s, -1
    try:
        while done + 1 < pages_before_kill and time.monotonic() < deadline:
            line = writer.stdout.readline()
            if not line:
                break
            done = int(line)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(5)
    return done + 1, writer


def test_after_kill_9_only_whole_valid_pages_are_served(tmp_path):
    returned, writer = run_writer_and_kill(tmp_path)
    assert writer.returncode == -signal.SIGKILL
    assert returned >= 30, "the writer did not get going in time"
    store = DiskPageStore(tmp_path, FINGERPRINT, 1 << 30)
    entries = list(store.entries())
    assert len(entries) >= returned  # the puts that returned before the kill survived it (and maybe a few after)
    assert [e.key for e in entries] == [e.key for e in chain(len(entries))]  # a whole prefix, parents first
    for entry in entries:
        page = store.get(entry.key)
        assert page is not None and np.array_equal(page, page_for(entry, shape=SHAPE))
    assert store.stats()["refused_corrupt"] == 0
    assert list((tmp_path / "tmp").iterdir()) == []
