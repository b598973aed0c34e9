"""Build-on-first-use for the C++ CPU kernels in this folder, registered as XLA FFI targets.

Contract: `load_target(source, symbol, target)` compiles `source` (a file here) once per machine into a
shared library cached under `cache_dir()`, registers `symbol` as the CPU FFI custom-call `target`, and
returns the loaded library (`registered_targets()` lists what this process registered); on any failure it raises `NativeUnavailable` with the reason (no compiler,
compile error, unwritable cache, disabled by TRELLIS_NATIVE=0), remembered for the process, and logs it
as one warning line (except when disabled). Callers treat that as "use the XLA path". Nothing is built at
import time.

The cache key covers the source and this folder's headers, the flags, the compiler's version, jaxlib's
version (the FFI headers) and the CPU's feature flags (the library is built with -march=native), so a
cache directory shared between machines or upgrades never loads a library built for something else.
A cached library is checked against the sha256 recorded when it was built before it is loaded
(`cache_entry`); one that does not match, or that fails to load, is discarded and rebuilt, with one
warning line. Builds write to a temporary file and rename it into place, so concurrent first uses
cannot load a half-written library.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from pallas_kernels.native import cache_entry
from pallas_kernels.native.cache_entry import DamagedEntry

HERE = Path(__file__).resolve().parent
FLAGS = (
    "-O3",
    "-march=native",
    "-mprefer-vector-width=512",
    "-std=c++17",
    "-shared",
    "-fPIC",
    "-fopenmp-simd",
    "-fno-math-errno",
)
_lock = threading.Lock()
_registered: dict[str, ctypes.CDLL] = {}  # target -> its library
_arguments: dict[str, tuple[str, str, str]] = {}  # target -> the load_target arguments that registered it
_failed: dict[str, str] = {}  # target -> why it could not be built (not retried in this process)
logger = logging.getLogger(__name__)


class NativeUnavailable(RuntimeError):
    """The native kernel cannot be built or loaded here; the message says why."""


def cache_dir() -> Path:
    base = os.environ.get("TRELLIS_NATIVE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "trellis-jax", "native"
    )
    return Path(base)


def _compiler() -> str:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    raise NativeUnavailable("no C++ compiler found (set CXX, or install g++)")


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line for line in cpuinfo if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def _flags() -> tuple[str, ...]:
    """FLAGS plus TRELLIS_NATIVE_CFLAGS (e.g. "-mno-avx512f" to build and test the portable paths)."""
    return FLAGS + tuple(os.environ.get("TRELLIS_NATIVE_CFLAGS", "").split())


@functools.cache
def _compiler_version(compiler: str) -> str:
    """`compiler --version`, run once per process (a process start keys every kernel it loads)."""
    return subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout


def _entry(source: Path, compiler: str, include: str) -> Path:
    """The cache entry (see `cache_entry`) for `source` built here: a path without suffix."""
    version = _compiler_version(compiler)
    import jaxlib  # the FFI headers' version

    key = hashlib.sha256()
    headers = b"".join(header.read_bytes() for header in sorted(HERE.glob("*.h")))
    for part in (
        source.read_bytes(),
        headers,
        " ".join(_flags()).encode(),
        version.encode(),
        jaxlib.__version__.encode(),
        _cpu_flags().encode(),
        platform.machine().encode(),
        include.encode(),
    ):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"{source.stem}-{key.hexdigest()[:16]}"


def _build(source: Path, entry: Path, compiler: str, include: str) -> Path:
    """Compile `source` into the cache entry `entry`; -> the library. OSError where the cache is unwritable."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=entry.parent, suffix=".so.tmp", delete=False) as tmp:
        partial = Path(tmp.name)
    try:
        command = [compiler, *_flags(), "-isystem", include, "-I", str(HERE), str(source), "-o", str(partial)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise NativeUnavailable(f"compiling {source.name} failed:\n{result.stderr[-2000:]}")
        return cache_entry.store(entry, partial)
    finally:
        partial.unlink(missing_ok=True)


def load_target(source: str, symbol: str, target: str) -> ctypes.CDLL:
    """Build (once) and register `symbol` from `source` as the CPU FFI target `target`; -> the library."""
    if os.environ.get("TRELLIS_NATIVE", "1") == "0":
        raise NativeUnavailable("disabled by TRELLIS_NATIVE=0")
    with _lock:
        if target in _registered:
            return _registered[target]
        if target in _failed:  # a failed build costs seconds: do not repeat it for every traced bucket
            raise NativeUnavailable(_failed[target])
        try:
            _registered[target] = _build_and_register(source, symbol, target)
            _arguments[target] = (source, symbol, target)
        except NativeUnavailable as error:
            if str(error) not in _failed.values():  # "no C++ compiler found" once, not once per kernel
                logger.warning("native kernel %s unavailable, using the XLA path: %s", source, _one_line(str(error)))
            _failed[target] = str(error)
            raise
        return _registered[target]


def registered_targets() -> list[tuple[str, str, str]]:
    """(source, symbol, target) of every target registered in this process: what a serialized executable
    that calls them needs registered again (by `load_target`) before it loads in another process."""
    with _lock:
        return sorted(_arguments.values())


def _one_line(text: str, limit: int = 600) -> str:
    """A reason (compiler output included) squeezed onto one log line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + " ..."


def cpu_kernel_unavailable(load, vectorized: str | None = None, slow: str = "") -> str | None:
    """None when a CPU FFI kernel can run here, else the reason: the default device is not a CPU, `load()`
    (which builds and registers it, returning the library) raised NativeUnavailable, or the library's
    `vectorized()` flag function says its fast path was not compiled in (then `slow` is the reason)."""
    import jax

    if jax.devices()[0].platform != "cpu":
        return "the native kernel is a CPU custom call"
    try:
        library = load()
    except NativeUnavailable as error:
        return str(error)
    if vectorized and not getattr(library, vectorized)():
        return slow
    return None


def _build_and_register(source: str, symbol: str, target: str) -> ctypes.CDLL:
    import jax

    path = HERE / source
    compiler = _compiler()
    include = jax.ffi.include_dir()
    entry = _entry(path, compiler, include)
    try:
        loaded = _load(cache_entry.verified(entry) or _built(path, entry, compiler, include), symbol)
    except DamagedEntry as damage:
        cache_entry.discard(entry)
        try:
            loaded = _load(_built(path, entry, compiler, include), symbol)
        except (NativeUnavailable, DamagedEntry) as error:
            raise NativeUnavailable(f"{damage}; rebuilding it failed: {error}") from error
        logger.warning("native kernel cache: %s; rebuilt it", damage)
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(loaded, symbol)), platform="cpu")
    return loaded


def _built(source: Path, entry: Path, compiler: str, include: str) -> Path:
    try:
        return _build(source, entry, compiler, include)
    except OSError as error:  # e.g. a read-only or full cache directory
        raise NativeUnavailable(f"building {source.name} in {entry.parent} failed: {error}") from error


def _load(library: Path, symbol: str) -> ctypes.CDLL:
    """dlopen a verified library; a failure of any kind (OSError, or UnicodeDecodeError from the loader's
    message about a garbled file, ...) marks the entry damaged."""
    try:
        loaded = ctypes.CDLL(str(library))
        getattr(loaded, symbol)
    except Exception as error:
        raise DamagedEntry(f"loading {library} failed ({type(error).__name__}: {error})") from error
    return loaded
