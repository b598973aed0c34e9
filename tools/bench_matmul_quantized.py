"""The matmul op on one packed Q4_1 layer (576 x 1536, 4 stacked) against XLA's dequantize-then-dot and the
float32 op, by row count: where the native quantized kernel should hand over (native_quantized.MAX_ROWS).

    PYTHONPATH=. python tools/bench_matmul_quantized.py

Median wall microseconds of 30 calls after one warm call; the weights are cache-resident, so this
measures compute, not the memory-bound case a model's decode step is (docs/benchmarks/quantized.md).
"""

from __future__ import annotations

import time

import gguf
import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.matmul import api, quantized

K, N, LAYERS = 576, 1536, 4


def median_us(fn, *args) -> float:
    fn(*args).block_until_ready()
    times = []
    for _ in range(30):
        start = time.perf_counter()
        fn(*args).block_until_ready()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e6


def main() -> None:
    rng = np.random.default_rng(0)
    qtype = gguf.GGMLQuantizationType.Q4_1
    layers = [gguf.quants.quantize(rng.standard_normal((N, K)).astype(np.float32), qtype) for _ in range(LAYERS)]
    packed = quantized.stack([quantized.from_gguf(raw, "Q4_1", N, K) for raw in layers])
    floats = jnp.asarray(rng.standard_normal((LAYERS, K, N)), jnp.float32)
    print("| rows | Q4_1 native us | Q4_1 xla us | float32 (op's choice) us |\n|---|---|---|---|")
    for rows in (1, 4, 8, 16, 32, 64, 128):
        x = jnp.asarray(rng.standard_normal((rows, K)), jnp.float32)
        timings = [
            median_us(jax.jit(lambda x, w, impl=impl: api.linear(x, w, 2, implementation=impl)), x, packed)
            for impl in ("native", "xla")
        ]
        timings.append(median_us(jax.jit(lambda x, w: api.linear(x, w, 2)), x, floats))
        print(f"| {rows} | " + " | ".join(f"{t:.0f}" for t in timings) + " |")


if __name__ == "__main__":
    main()
