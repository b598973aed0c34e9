"""The matmul op at decode sizes on K-quant layers (Q4_K, Q6_K, and layers alternating between them as a
LayerMix; the native AVX2 kernel and XLA's dequantize-then-dot) against Q4_1 (native) and float32 (the op's
choice: the native float32 kernel where it runs).

    PYTHONPATH=. python tools/bench_matmul_kquants.py [--k 2048] [--n 5632] [--layers 4] [--rows 1 8] \
        [--calls 12] [--native-only]

Median wall milliseconds of `--calls` calls after one warm call, each on a different stacked layer so
that several layers' bytes (float32: --layers x K x N x 4) exceed the caches: the memory-bound case a
model's decode step is. Random blocks (trellis_testing.kquant_blocks); the numbers do not depend on them.
"""

from __future__ import annotations

import argparse
import time

import gguf
import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.matmul import api, quantized
from trellis_testing.kquant_blocks import random_k_quant

MIX = "Q4_K+Q6_K"


def median_ms(fn, x, w, layers: int, calls: int) -> float:
    fn(x, w, jnp.int32(0)).block_until_ready()
    times = []
    for i in range(calls):
        start = time.perf_counter()
        fn(x, w, jnp.int32(i % layers)).block_until_ready()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def weights(fmt, k, n, layers, rng):
    if fmt == MIX:  # Q4_K_M's attn_v / ffn_down: Q4_K and Q6_K layers alternating, each in its own format
        formats = [("Q4_K", "Q6_K")[i % 2] for i in range(layers)]
        return quantized.mix([quantized.from_gguf(random_k_quant(f, n, k, rng), f, n, k) for f in formats])
    if fmt in quantized.K_QUANTS:
        return quantized.stack([quantized.from_gguf(random_k_quant(fmt, n, k, rng), fmt, n, k) for _ in range(layers)])
    if fmt == "float32":
        return jnp.asarray(rng.standard_normal((layers, k, n)), jnp.float32)
    qtype = gguf.GGMLQuantizationType[fmt]
    raw = [gguf.quants.quantize(rng.standard_normal((n, k)).astype(np.float32), qtype) for _ in range(layers)]
    return quantized.stack([quantized.from_gguf(r, fmt, n, k) for r in raw])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=2048)
    parser.add_argument("--n", type=int, default=5632)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--calls", type=int, default=12)
    parser.add_argument("--native-only", action="store_true", help="only the native kernel's columns (no XLA)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    columns = [("float32", None), ("Q4_1", "native"), ("Q4_K", "native"), ("Q4_K", "xla"), ("Q6_K", "native")]
    columns += [("Q6_K", "xla"), (MIX, "native")]
    if args.native_only:
        columns = [(fmt, impl) for fmt, impl in columns if impl == "native"]
    stacked = {fmt: weights(fmt, args.k, args.n, args.layers, rng) for fmt in dict(columns)}
    print(f"K={args.k} N={args.n} layers={args.layers}; median ms per call")
    print("| rows | " + " | ".join(f"{f} {impl or 'op choice'}" for f, impl in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for rows in args.rows:
        x = jnp.asarray(rng.standard_normal((rows, args.k)), jnp.float32)
        cells = []
        for fmt, impl in columns:
            fn = jax.jit(lambda x, w, layer, impl=impl: api.linear(x, w, layer, implementation=impl))
            cells.append(median_ms(fn, x, stacked[fmt], args.layers, args.calls))
        print(f"| {rows} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
