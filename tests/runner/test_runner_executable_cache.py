"""Serialized step programs (runner/executable_cache.py): a restart loads every program warm-up needs without
compiling anything, samples the same tokens, and a damaged entry is replaced by the recompiled program."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

CHILD = """
import json, logging, sys
logging.basicConfig(level=logging.WARNING, format="LOG %(name)s: %(message)s")
import jax
sys.path.insert(0, sys.argv[2])
from runner_helpers import TINY
from trellis_jax.model import init_params
from trellis_jax.runner import Runner, backend_compile_count
from trellis_jax.step_plan import SamplingArrays, SequenceWork, StepPlan
runner = Runner((TINY, init_params(TINY, jax.random.key(0))), page_size=4, num_pages=16, token_buckets=(4, 8),
                seq_buckets=(1, 2), compile_cache_dir=sys.argv[1])
before = backend_compile_count()
runner.warmup(progress=False)
compiles = backend_compile_count() - before
plan = StepPlan([SequenceWork("a", [5, 6, 7], 0, [1], True, SamplingArrays()),
                 SequenceWork("b", [9], 0, [2], True, SamplingArrays(temperature=0.7, seed=3))],
                page_copies=[(1, 3)])
tokens = runner.run(plan).tokens
print(json.dumps({"compilations": runner.num_compilations, "loaded": runner._programs.num_loaded,
                  "backend_compiles": compiles, "tokens": {k: v.token_id for k, v in tokens.items()}}))
"""


def run_child(cache_dir: pathlib.Path) -> dict:
    """-> the child's counts and sampled tokens, plus "logs": its warning lines."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(cache_dir), str(pathlib.Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["logs"] = [line for line in done.stderr.splitlines() if line.startswith("LOG ")]
    return result


def test_a_restart_loads_every_program_compiles_nothing_and_samples_the_same_tokens(tmp_path):
    first = run_child(tmp_path)
    assert first["compilations"] >= 2 and first["loaded"] == 0
    second = run_child(tmp_path)
    assert second["loaded"] == first["compilations"] and second["compilations"] == 0
    assert second["backend_compiles"] == 0  # the page copier too
    assert second["tokens"] == first["tokens"]

    # A damaged entry is deleted with a warning, compiled again and stored afresh for the next start. (JAX's own
    # entries go too, so XLA compiles it: one loaded from JAX's cache is not stored, see the end.)
    entries = sorted((tmp_path / "executables").glob("*/step-*"))
    entries[0].write_bytes(entries[0].read_bytes()[:100])
    for jax_entry in tmp_path.glob("*-cache"):
        jax_entry.unlink()
    repaired = run_child(tmp_path)
    assert repaired["compilations"] == 1 and repaired["loaded"] == first["compilations"] - 1
    assert any("does not load" in line and entries[0].name in line for line in repaired["logs"])
    assert repaired["tokens"] == first["tokens"]
    after = run_child(tmp_path)
    assert after["compilations"] == 0 and after["tokens"] == first["tokens"]

    # A program JAX's persistent cache deserialized is not serialized again (it would lose code); it runs. Only
    # the repaired one is in JAX's cache now (its entries were deleted above); the others compile and are stored.
    shutil.rmtree(tmp_path / "executables")
    from_jax_cache = run_child(tmp_path)
    assert from_jax_cache["compilations"] == first["compilations"] and from_jax_cache["tokens"] == first["tokens"]
    stored = {path.name for path in (tmp_path / "executables").glob("*/step-*")}
    assert stored == {entry.name for entry in entries} - {entries[0].name}
