"""The persistent compilation cache: a second process loads the step instead of compiling it, and an
entry damaged on disk is replaced by the recompiled program, so the start after that loads again."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import pytest

CHILD = """
import json, logging, sys
logging.basicConfig(level=logging.WARNING, format="LOG %(name)s: %(message)s")
import jax
from jax import monitoring
events = []
monitoring.register_event_listener(lambda event, **kw: events.append(event))
sys.path.insert(0, sys.argv[2])
from runner_helpers import TINY
from trellis_jax.model import init_params
from trellis_jax.runner import Runner
runner = Runner((TINY, init_params(TINY, jax.random.key(0))), page_size=4, num_pages=8, token_buckets=(4,),
                seq_buckets=(1,), compile_cache_dir=sys.argv[1])
runner.warmup(progress=False)
print(json.dumps({"hits": events.count("/jax/compilation_cache/cache_hits"),
                  "writes": events.count("/jax/compilation_cache/cache_misses"),
                  "compilations": runner.num_compilations}))
"""


def run_child(cache_dir: pathlib.Path) -> dict:
    """-> the child's counts, plus "logs": its log lines (and JAX's warnings about the cache).

    The serialized executables the runner keeps beside JAX's entries (runner/executable_cache.py) are removed
    first: with them a restart never reaches JAX's cache, which is what these tests are about."""
    shutil.rmtree(cache_dir / "executables", ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(cache_dir), str(pathlib.Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["logs"] = [
        line for line in done.stderr.splitlines() if line.startswith("LOG ") or "persistent compilation cache" in line
    ]
    return result


@pytest.fixture(scope="module")
def two_starts(tmp_path_factory):
    """-> (a cache directory one process filled, that process's counts, the counts of a second start on it).

    Shared by the module: the first start fills the directory and the second only reads it (its writes are
    asserted to be 0); the damage test then damages that same directory. The cache keys depend on the
    directory's path, so a copy elsewhere would be a cold cache: the tests share the directory itself."""
    cache_dir = tmp_path_factory.mktemp("compile_cache")
    first = run_child(cache_dir)
    return cache_dir, first, run_child(cache_dir)


def test_restart_loads_the_compiled_step_from_the_cache_dir(two_starts):
    _, first, second = two_starts
    assert first["hits"] == 0 and first["writes"] >= 1
    assert second["hits"] == first["writes"] and second["writes"] == 0
    assert second["compilations"] == first["compilations"] == 1


def truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def garble(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(255 - b for b in data[middle : middle + 64]) + data[middle + 64 :]


def empty(data: bytes) -> bytes:
    return b""


def test_damaged_entries_are_rewritten_so_the_next_start_compiles_nothing(two_starts):
    cache_dir = two_starts[0]
    entries = sorted(cache_dir.glob("*-cache"))
    damages = [truncate, garble, empty]
    for i, entry in enumerate(entries):
        entry.write_bytes(damages[i % len(damages)](entry.read_bytes()))
    repaired = run_child(cache_dir)
    assert repaired["hits"] == 0 and repaired["writes"] == len(entries)
    assert sorted(line.split(" failed to load")[0] for line in repaired["logs"]) == [
        f"LOG trellis_jax.runner.compile_cache: compile cache entry {entry}" for entry in entries
    ]
    after = run_child(cache_dir)
    assert after["hits"] == len(entries) and after["writes"] == 0 and after["logs"] == []
