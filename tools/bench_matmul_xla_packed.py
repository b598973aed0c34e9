"""The matmul op's packed-weight backends on one model-shaped step's matrices: the default model's 30 layers
of Q4_1 (w_qkv 576x960, wo 576x576, w_gate_up 576x3072, w_down 1536x576) through a layer scan, then its
Q8_0 head (576x49152), from random weights; by row count.

    PYTHONPATH=. python tools/bench_matmul_xla_packed.py [--rows 1 2 8 32 64 256]

Columns: the native kernel (up to native_quantized.MAX_ROWS), XLA's chunked path (xla_quantized.py, what
`implementation="xla"` runs on CPU), and the whole-matrix dequantize-then-dot it replaced (reference.py's
arithmetic). Each cell: the fastest of 5 runs after a warm one, wall and process CPU ms. Unlike
bench_matmul_quantized.py the weights (~98 MB packed) do not fit in cache, as in a real step.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.matmul import api, native_quantized, quantize, quantized
from pallas_kernels.matmul.reference import reference_linear

LAYERS = 30
SHAPES = {"w_qkv": (576, 960), "wo": (576, 576), "w_gate_up": (576, 3072), "w_down": (1536, 576)}
HEAD = (576, 49152)


def weights(seed=0):
    rng = np.random.default_rng(seed)
    made = lambda shape, scheme: quantized.to_device(  # noqa: E731
        quantize.quantize(rng.standard_normal(shape).astype(np.float32) * 0.05, scheme)
    )
    layers = {name: made((LAYERS, k, n), "int4") for name, (k, n) in SHAPES.items()}  # Q4_1
    return layers, made(HEAD, "int8")  # Q8_0


def step(linear, x, layers, head):
    """The step's matmuls in the model's order, each output feeding the next (sliced to the next's K)."""

    def body(h, layer):
        a = linear(h, layers["w_qkv"], layer)[:, :576]
        b = linear(a, layers["wo"], layer)
        c = linear(b, layers["w_gate_up"], layer)[:, :1536]
        return h + 1e-3 * linear(c, layers["w_down"], layer), None

    h, _ = jax.lax.scan(body, x, jnp.arange(LAYERS))
    return linear(h, head, None)


BACKENDS = {
    "native": lambda x, w, layer: api.linear(x, w, layer, implementation="native"),
    "xla": lambda x, w, layer: api.linear(x, w, layer, implementation="xla"),
    "whole dequantize": reference_linear,
}


def fastest_ms(fn, *args, repeats=5) -> tuple[float, float]:
    jax.block_until_ready(fn(*args))
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return 1000 * min(walls), 1000 * min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 8, 32, 64, 256])
    args = parser.parse_args()
    layers, head = weights()
    native = native_quantized.available() is None
    print("| rows | " + " | ".join(f"{b} wall / CPU ms" for b in BACKENDS) + " |")
    print("|---" * (len(BACKENDS) + 1) + "|")
    for rows in args.rows:
        x = jnp.asarray(np.random.default_rng(rows).standard_normal((rows, 576)), jnp.float32)
        cells = []
        for name, linear in BACKENDS.items():
            if name == "native" and not (native and rows <= native_quantized.MAX_ROWS):
                cells.append("-")
                continue
            wall, cpu = fastest_ms(jax.jit(functools.partial(step, linear)), x, layers, head)
            cells.append(f"{wall:.0f} / {cpu:.0f}")
        print(f"| {rows} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
