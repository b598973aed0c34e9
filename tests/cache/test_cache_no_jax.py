"""The cache package is pure host code: importing and using it loads neither jax nor numpy.

What its sources may import (the standard library only) is checked with every package in tests/test_layering.py.
"""

import pathlib
import subprocess
import sys

CACHE_DIR = pathlib.Path(__file__).resolve().parents[2] / "trellis_jax" / "cache"


def test_importing_and_using_the_cache_loads_no_jax_or_numpy():
    code = (
        "import sys\n"
        "from trellis_jax.cache import RadixCache\n"
        "c = RadixCache(8, 2); c.insert([1, 2], c.alloc_pages(1)); c.match([1, 2]); c.check_integrity()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'numpy', 'flax'))\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=CACHE_DIR.parents[1]
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
