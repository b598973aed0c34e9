"""The persistent compilation cache: a second process loads the step instead of compiling it."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

CHILD = """
import json, sys
import jax
from jax import monitoring
hits = []
monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None)
sys.path.insert(0, sys.argv[2])
from runner_helpers import TINY
from trellis_jax.model import init_params
from trellis_jax.runner import Runner
runner = Runner((TINY, init_params(TINY, jax.random.key(0))), page_size=4, num_pages=8, token_buckets=(4,),
                seq_buckets=(1,), compile_cache_dir=sys.argv[1])
runner.warmup(progress=False)
print(json.dumps({"hits": len(hits), "compilations": runner.num_compilations}))
"""


def run_child(cache_dir: pathlib.Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(cache_dir), str(pathlib.Path(__file__).parent)],
                          capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_restart_loads_the_compiled_step_from_the_cache_dir(tmp_path):
    first = run_child(tmp_path)
    assert first["hits"] == 0 and any(tmp_path.iterdir())
    second = run_child(tmp_path)
    assert second["hits"] >= 1
    assert second["compilations"] == first["compilations"] == 1
