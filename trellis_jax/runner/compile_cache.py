"""The persistent XLA compilation cache, with damaged entries replaced instead of kept.

Contract: `enable_persistent_compile_cache(directory)` stores every compiled program under `directory`
so the next process loads it instead of compiling (process-wide: a JAX setting). An entry that fails to
load (truncated, garbled, emptied) is deleted the moment its read fails, with one warning line naming
it; JAX then compiles the program as on a miss and writes a fresh entry in its place, so the next start
loads again. JAX 0.10 alone warns and recompiles but keeps the bad file (its file cache never
overwrites an existing key), so every later start would recompile too.

How: JAX has no hook for a failed read, so this wraps `jax._src.compilation_cache.get_executable_and_time`,
its one read path (PGLE off), once per process. Should a JAX upgrade remove that function, the cache
still works; only the repair is lost (tests/runner/test_runner_compile_cache.py notices).
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax

logger = logging.getLogger(__name__)
_ENTRY_FILES = ("{key}-cache", "{key}-atime")  # how jax._src.lru_cache names a key's files


def enable_persistent_compile_cache(directory: str) -> None:
    """Store every compiled program under `directory`; replace entries that fail to load.

    Resets JAX's cache state so the directory takes effect even after earlier compilations in this process.
    """
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.set_cache_dir(str(directory))
    compilation_cache.reset_cache()
    _discard_entries_that_fail_to_load()


def _discard_entries_that_fail_to_load() -> None:
    from jax._src import compilation_cache as internals

    read = getattr(internals, "get_executable_and_time", None)
    if read is None or getattr(read, "discards_damaged_entries", False):
        return

    def read_or_discard(cache_key, *args, **kwargs):
        try:
            return read(cache_key, *args, **kwargs)
        except Exception as error:  # whatever a damaged file makes zlib or the deserializer raise
            if jax.config.jax_raise_persistent_cache_errors:
                raise
            _discard(cache_key, error)
            return None, None  # a miss: JAX compiles and writes the entry afresh

    read_or_discard.discards_damaged_entries = True
    internals.get_executable_and_time = read_or_discard


def _discard(cache_key: str, error: Exception) -> None:
    directory = Path(jax.config.jax_compilation_cache_dir or ".")
    entry = directory / _ENTRY_FILES[0].format(key=cache_key)
    try:
        for name in _ENTRY_FILES:
            (directory / name.format(key=cache_key)).unlink(missing_ok=True)
    except OSError as unlink_error:
        logger.warning(
            "compile cache entry %s failed to load (%s: %s) and could not be deleted (%s); recompiling",
            entry,
            type(error).__name__,
            error,
            unlink_error,
        )
        return
    logger.warning(
        "compile cache entry %s failed to load (%s: %s); deleted it, recompiling writes it afresh",
        entry,
        type(error).__name__,
        error,
    )
