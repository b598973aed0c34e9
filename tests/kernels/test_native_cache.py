"""A damaged native-kernel cache: the library is checked before dlopen, rebuilt, or the XLA path is used.

Each load runs in a child process, because dlopen of a truncated or garbled library can kill the process
(SIGBUS, SIGSEGV) instead of raising. The children build with a fake compiler that copies a real
copy_pages library (built once for the session), so a rebuild costs milliseconds and is counted; the
cache is a temporary TRELLIS_NATIVE_CACHE, never the shared one.
"""

import os
import random
import subprocess
import sys
import textwrap

import jax
import pytest

from pallas_kernels.native import build, cache_entry

SOURCE, SYMBOL, TARGET = "copy_pages.cc", "TrellisCopyPages", "trellis_copy_pages"
FAKE_COMPILER = """#!/bin/sh
[ "$1" = "--version" ] && { echo "fake c++ 1.0"; exit 0; }
echo build >> "$FAKE_CXX_LOG"
[ -n "$FAKE_CXX_FAIL" ] && { echo "fake compiler refuses" >&2; exit 1; }
for out; do :; done
cp "$FAKE_CXX_LIBRARY" "$out"
"""
CHILD = textwrap.dedent(f"""
    import logging
    logging.basicConfig(level=logging.WARNING, format="LOG %(message)s")
    from pallas_kernels.native import build
    try:
        build.load_target("{SOURCE}", "{SYMBOL}", "{TARGET}")
        print("loaded")
    except build.NativeUnavailable:
        print("unavailable")
""")


def truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def garble(data: bytes) -> bytes:
    noise = random.Random(1)
    start = len(data) // 4
    return data[:start] + bytes(noise.randrange(256) for _ in range(2048)) + data[start + 2048 :]


def empty(data: bytes) -> bytes:
    return b""


@pytest.fixture(scope="module")
def real_library():
    try:
        return build.load_target(SOURCE, SYMBOL, TARGET)._name
    except build.NativeUnavailable as error:
        pytest.skip(f"no native kernels here: {error}")


@pytest.fixture
def cache(tmp_path, monkeypatch, real_library):
    """A cache holding a copy_pages entry built by the fake compiler; -> the entry."""
    compiler = tmp_path / "fake-c++"
    compiler.write_text(FAKE_COMPILER)
    compiler.chmod(0o755)
    for name, value in (
        ("TRELLIS_NATIVE_CACHE", tmp_path / "native"),
        ("CXX", compiler),
        ("FAKE_CXX_LIBRARY", real_library),
        ("FAKE_CXX_LOG", tmp_path / "builds.log"),
    ):
        monkeypatch.setenv(name, str(value))
    entry = build._entry(build.HERE / SOURCE, str(compiler), jax.ffi.include_dir())
    build._build(build.HERE / SOURCE, entry, str(compiler), jax.ffi.include_dir())
    return entry


def load_in_child(**env) -> tuple[str, list[str]]:
    """-> (what the child printed: "loaded" | "unavailable", its log lines); fails on a crash."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"the child died ({done.returncode}):\n{done.stderr[-3000:]}"
    logs = [line for line in done.stderr.splitlines() if line.startswith("LOG ")]
    return done.stdout.strip(), logs


def builds() -> int:
    return len(open(os.environ["FAKE_CXX_LOG"]).read().splitlines())


@pytest.mark.parametrize("damage", [truncate, garble, empty])
def test_a_damaged_library_is_rebuilt_before_it_is_loaded(cache, damage):
    library = cache_entry.verified(cache)
    damaged = damage(library.read_bytes())
    library.write_bytes(damaged)
    assert load_in_child() == (
        "loaded",
        [
            f"LOG native kernel cache: library {library} ({len(damaged)} bytes) "
            "does not match its recorded sha256; rebuilt it"
        ],
    )
    assert builds() == 2 and cache_entry.verified(cache) is not None


def test_a_library_that_fails_to_load_is_rebuilt(cache, tmp_path):
    not_elf = tmp_path / "native" / "garbage.so.tmp"
    not_elf.write_bytes(bytes(random.Random(2).randrange(256) for _ in range(4096)))
    library = cache_entry.store(cache, not_elf)  # recorded as it is: only the load can tell
    printed, logs = load_in_child()
    assert printed == "loaded" and builds() == 2
    assert len(logs) == 1 and logs[0].startswith(f"LOG native kernel cache: loading {library} failed (OSError")


def test_a_damaged_library_whose_rebuild_fails_leaves_the_xla_path(cache):
    cache_entry.verified(cache).write_bytes(b"")
    printed, logs = load_in_child(FAKE_CXX_FAIL="1")
    assert printed == "unavailable" and builds() == 2
    assert len(logs) == 1 and logs[0].startswith(f"LOG native kernel {SOURCE} unavailable, using the XLA path: ")
    assert "rebuilding it failed: compiling copy_pages.cc failed: fake compiler refuses" in logs[0]


def test_any_exception_from_dlopen_marks_the_entry_damaged(tmp_path, monkeypatch):
    def garbled_dlerror(path):  # what ctypes raises when the loader's message is not UTF-8
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    monkeypatch.setattr(build.ctypes, "CDLL", garbled_dlerror)
    with pytest.raises(cache_entry.DamagedEntry, match="UnicodeDecodeError"):
        build._load(tmp_path / "x.so", SYMBOL)


def test_an_entry_never_built_is_a_miss_not_damage(tmp_path):
    assert cache_entry.verified(tmp_path / "copy_pages-0123456789abcdef") is None


def test_a_garbled_record_is_damage(cache):
    cache.with_name(cache.name + ".sha256").write_bytes(b"\xff\xfe not a digest")
    with pytest.raises(cache_entry.DamagedEntry, match="record .* unreadable"):
        cache_entry.verified(cache)


def test_discard_removes_the_record_and_every_library(cache, tmp_path):
    cache_entry.discard(cache)
    assert sorted(p.name for p in (tmp_path / "native").iterdir()) == []
