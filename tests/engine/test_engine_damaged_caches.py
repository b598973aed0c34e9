"""An engine starts over a damaged native-kernel cache and a damaged compile cache, serves the same greedy
tokens, logs one line per damaged file, and leaves both caches whole: the start after it rebuilds and
recompiles nothing.

Each start is a child process (a truncated library loaded by mistake would kill it with SIGBUS). The
first start uses the usual native cache (read, and filled if empty, as any run does); its libraries are
copied into a temporary TRELLIS_NATIVE_CACHE, where one is damaged: the shared cache is never touched.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TINY_LLAMA = Path(__file__).parents[1] / "fixtures" / "tiny_llama"
DAMAGED_KERNEL = "trellis_rms_norm"  # one of the cheapest to rebuild
CHILD = textwrap.dedent(f"""
    import json, logging, sys
    logging.basicConfig(level=logging.WARNING, format="LOG %(name)s: %(message)s")
    from jax import monitoring
    events = []
    monitoring.register_event_listener(lambda event, **kw: events.append(event))
    from pallas_kernels.native import build
    from trellis_jax.engine.api import LLM, SamplingParams
    llm = LLM(model="{TINY_LLAMA}", num_pages=32, page_size=4, max_num_seqs=2, max_num_batched_tokens=16,
              deterministic=True, compile_cache_dir=sys.argv[1])
    outputs = llm.generate([[1, 2, 3, 4, 5], [7, 8, 9]], SamplingParams(temperature=0, max_tokens=6))
    print(json.dumps({{"tokens": [o.token_ids for o in outputs],
                      "writes": events.count("/jax/compilation_cache/cache_misses"),
                      "libraries": {{t: lib._name for t, lib in build._registered.items()}}}}))
""")


def start(compile_cache: Path, **env) -> dict:
    """-> the child's tokens, compile-cache writes and loaded libraries, plus "logs": its log lines."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(compile_cache)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"the engine died ({done.returncode}):\n{done.stderr[-3000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["logs"] = re.findall(r"LOG [^\r\n]*", done.stderr)  # log lines share a line with progress bars
    return result


def copy_native_cache(libraries: dict, destination: Path) -> None:
    """Copy each library with its sha256 record (`<entry>-<digest16>.so` beside `<entry>.sha256`)."""
    destination.mkdir()
    for library in map(Path, libraries.values()):
        record = library.with_name(re.sub(r"-[0-9a-f]{16}\.so$", ".sha256", library.name))
        for path in (library, record):
            shutil.copy2(path, destination / path.name)


def test_damaged_caches_are_repaired_and_serve_the_same_tokens(tmp_path):
    compile_cache, native_cache = tmp_path / "compile", tmp_path / "native"
    clean = start(compile_cache)
    if DAMAGED_KERNEL not in clean["libraries"]:
        pytest.skip("the native kernels do not build here")
    copy_native_cache(clean["libraries"], native_cache)
    library = native_cache / Path(clean["libraries"][DAMAGED_KERNEL]).name
    truncated = library.read_bytes()[: library.stat().st_size // 2]
    library.write_bytes(truncated)
    step_entry = next(compile_cache.glob("jit_step-*-cache"))
    content = step_entry.read_bytes()
    step_entry.write_bytes(content[:100] + b"garbled!" * 8 + content[164:])
    # Without the serialized programs (runner/executable_cache.py, tested on their own), so the start reads JAX's.
    shutil.rmtree(compile_cache / "executables")

    damaged = start(compile_cache, TRELLIS_NATIVE_CACHE=str(native_cache))
    assert damaged["tokens"] == clean["tokens"]
    native_line, compile_line = sorted(damaged["logs"])  # exactly two lines, or this unpacking fails
    assert native_line == (
        f"LOG pallas_kernels.native.build: native kernel cache: library {library} "
        f"({len(truncated)} bytes) does not match its recorded sha256; rebuilt it"
    )
    assert compile_line.startswith(
        f"LOG trellis_jax.runner.compile_cache: compile cache entry {step_entry} failed to load"
    )

    after = start(compile_cache, TRELLIS_NATIVE_CACHE=str(native_cache))
    assert after["tokens"] == clean["tokens"] and after["logs"] == [] and after["writes"] == 0
