"""Measure model loading: GGUF dequantize vs orbax restore of the converted params (docs/benchmarks/loading.md).

    .venv/bin/python tools/bench_loading.py [--model SPEC] [--dtype float32] [--repeats 3] [--keep DIR]

Converts the model to an orbax directory once, then times, `repeats` times each (median reported):
GGUF -> params (read + dequantize + un-permute + stack), the GGUF tokenizer, orbax -> params, and the
saved tokenizer. Params are blocked until ready on the device. Prints a markdown table of wall-clock
and process CPU seconds (CPU time is the steadier number on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from trellis_jax.checkpoints import default_gguf_path, load_model, load_orbax, save_orbax  # noqa: E402
from trellis_jax.checkpoints.gguf_loader import load_gguf_weights  # noqa: E402
from trellis_jax.tokenizer import Tokenizer  # noqa: E402


def timed(fn, repeats):
    """Median (wall seconds, CPU seconds of this process, all threads) over `repeats` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a GGUF file (default: the default model)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", default=None, help="write the orbax checkpoint here instead of a temp dir")
    args = parser.parse_args()
    path = args.model or default_gguf_path()
    loaded = load_model(path, dtype=args.dtype)
    directory = args.keep or os.path.join(tempfile.mkdtemp(), "orbax")
    start = time.perf_counter()
    save_orbax(loaded, directory, overwrite=True)
    save_seconds = time.perf_counter() - start
    rows = [
        ("GGUF -> params (dequantize)", timed(lambda: load_gguf_weights(path, args.dtype)[1], args.repeats)),
        ("GGUF tokenizer", timed(lambda: Tokenizer.from_gguf(path) and 0, args.repeats)),
        ("orbax dir -> params + tokenizer (load_orbax)", timed(lambda: load_orbax(directory).params, args.repeats)),
        (
            "saved tokenizer (Tokenizer.from_hf_dir)",
            timed(lambda: Tokenizer.from_hf_dir(os.path.join(directory, "tokenizer")) and 0, args.repeats),
        ),
        ("load_model(GGUF), total", timed(lambda: load_model(path, dtype=args.dtype).params, args.repeats)),
        ("load_model(orbax dir), total", timed(lambda: load_model(directory).params, args.repeats)),
    ]
    size_mb = sum(x.nbytes for x in jax.tree.leaves(loaded.params)) / 2**20
    print(
        f"model {os.path.basename(path)}, {args.dtype} params {size_mb:.0f} MiB, device {jax.devices()[0].platform}, "
        f"median of {args.repeats}; one-off orbax save {save_seconds:.2f} s"
    )
    print("| step | wall s | CPU s |\n|---|---|---|")
    for name, (wall, cpu) in rows:
        print(f"| {name} | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
