"""The GGUF loader gives back the file pages it read a tensor through once the tensor is copied out, so a big
load's resident set is the weights it keeps, not those plus the whole file (gguf_loader.release_file_pages)."""

import numpy as np
import pytest

from tools.make_random_gguf import SHAPES, write
from trellis_jax.checkpoints.gguf_loader import open_gguf, release_file_pages

pytest.importorskip("gguf")


def _mapped_rss_kib(path) -> int:
    """Resident KiB of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                inside = len(fields) >= 6 and fields[5] == str(path)
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


def test_a_read_tensor_s_pages_leave_the_resident_set(tmp_path):
    path = tmp_path / "m.gguf"
    write(path, SHAPES["tiny"])
    reader = open_gguf(path)
    tensor = max(reader.tensors, key=lambda t: t.n_bytes)
    assert tensor.n_bytes > 64 * 1024
    before = _mapped_rss_kib(path)
    np.asarray(tensor.data).sum()  # read every page of it
    touched = _mapped_rss_kib(path)
    assert touched - before >= tensor.n_bytes // 1024 - 8
    release_file_pages(reader, tensor)
    assert _mapped_rss_kib(path) <= touched - (tensor.n_bytes // 1024 - 8)
    assert bytes(np.asarray(tensor.data[:16]).tobytes())  # still readable: the kernel maps the pages back
