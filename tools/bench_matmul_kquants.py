"""The matmul op at decode sizes on K-quant layers (Q4_K, Q6_K: the XLA dequantize-then-dot path) against
Q4_1 (the native AVX2 kernel) and float32 (the op's choice: the native float32 kernel where it runs).

    PYTHONPATH=. python tools/bench_matmul_kquants.py [--k 2048] [--n 5632] [--layers 4] [--rows 1 8]

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


def median_ms(fn, x, w, layers: int, calls: int) -> float:
    fn(x, w, jnp.int32(0)).block_until_ready()
    times = []
    for i in range(calls):
        start = time.perf_counter()
        fn(x, w, jnp.int32(i % layers)).block_until_ready()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def weights(fmt, k, n, layers, rng):
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
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    formats = ("float32", "Q4_1", "Q4_K", "Q6_K")
    stacked = {fmt: weights(fmt, args.k, args.n, args.layers, rng) for fmt in formats}
    print(f"K={args.k} N={args.n} layers={args.layers}; median ms per call")
    print("| rows | " + " | ".join(f"{f} ({api.choose(jnp.zeros((1, args.k)), stacked[f])})" for f in formats) + " |")
    print("|---" * (len(formats) + 1) + "|")
    for rows in args.rows:
        x = jnp.asarray(rng.standard_normal((rows, args.k)), jnp.float32)
        fn = jax.jit(lambda x, w, layer: api.linear(x, w, layer))
        cells = [median_ms(fn, x, stacked[f], args.layers, args.calls) for f in formats]
        print(f"| {rows} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
