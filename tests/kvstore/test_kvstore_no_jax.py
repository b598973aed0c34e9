"""The kvstore package is host Python + numpy: importing and using it loads no jax."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_importing_and_using_the_stores_loads_no_jax(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from trellis_jax.kvstore import DiskPageStore, HostPageStore, PageEntry, TieredPageStore, chain_key\n"
        "key = chain_key(None, [1, 2], '')\n"
        f"s = TieredPageStore(HostPageStore(1 << 20), DiskPageStore({str(tmp_path)!r}, {{'w': '1'}}, 1 << 20))\n"
        "s.put(PageEntry(key, None, (1, 2), ''), np.zeros((2, 1, 1, 2, 4), np.float32)); s.get(key); s.close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
