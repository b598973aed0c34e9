"""The native quantized matmul kernel alone, per matrix of the default model (Q4_1 GGUF kept packed), at
decode-sized row counts: what share of a decode step its matmuls are, and how close each is to the
machine's weight-streaming rate.

    PYTHONPATH=. python tools/bench_qmatmul.py [--rows 1 8] [--repeats 5] [--baseline OLD.cc]

Each matrix is multiplied for every layer in turn, inside one jitted loop (so the layers' weights stream
from memory as in a decode step, and the jit dispatch is paid once per loop, not per call); the time per
call is the median loop time over the calls in it. Rows: q/k/v fused, o, gate/up fused, down (30 layers
each), the tied LM head (Q8_0, one matrix, [576, 49152]), "tiny" (K 32, N 16, 30 layers: the per-call
overhead inside a loop), and "step": every layer's four matrices and the head in one loop, the matmuls of
one decode step.
Columns: microseconds per call, G weights/s (K x N per call, whatever the rows) and GB/s of packed bytes
(codes, scales, mins). `--baseline OLD.cc` builds another version of native/layer_matmul_q.cc (e.g.
`git show REV:pallas_kernels/native/layer_matmul_q.cc > /tmp/old.cc`) as a second target and times it
interleaved with the current one, call for call, in the same process.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.matmul import layouts, native_quantized, quantized
from pallas_kernels.native.build import load_target
from trellis_jax.checkpoints import load_model

BASELINE_TARGET = "trellis_layer_matmul_q_baseline"


def kernel_call(target: str, x, w, layer):
    """The raw FFI call of native_quantized.matmul, on a chosen target (the current or the baseline)."""
    call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct((x.shape[0], w.shape[-1]), jnp.float32))
    mins = w.scales if w.mins is None else w.mins
    rows = jnp.int32(x.shape[0])
    fmt = np.int32(native_quantized.FORMAT_IDS[w.fmt])
    return call(x, w.codes, w.scales, mins, jnp.asarray(layer, jnp.int32), rows, fmt=fmt)


def benches(params) -> list[tuple[str, list]]:
    """(name, the stacked QuantizedWeights [L, K, N] one loop multiplies) of the default model's matrices,
    projections fused, then "tiny" and "step" (see the module docstring)."""
    layers = layouts.with_fused_projections(params)["layers"]
    named = [(name, [layers[key]]) for name, key in (("qkv", "w_qkv"), ("o", "wo"), ("gate_up", "w_gate_up"))]
    named += [("down", [layers["w_down"]]), ("head", [jax.tree.map(lambda a: a[None], params["embed"])])]
    step = [ws[0] for _, ws in named]
    layers = step[0].codes.shape[0]  # "tiny" as many layers deep, so its loop times calls, not the dispatch
    named.append(("tiny", [jax.tree.map(lambda a: jnp.stack([jnp.asarray(a)] * layers), tiny_q4_1(16, 32))]))
    return [*named, ("step", step)]


def tiny_q4_1(n: int, k: int):
    """A random Q4_1 [k, n] matrix, made by gguf's quantizer."""
    import gguf

    raw = gguf.quants.quantize(
        np.random.default_rng(0).standard_normal((n, k)).astype(np.float32), gguf.GGMLQuantizationType.Q4_1
    )
    return quantized.from_gguf(raw, "Q4_1", n, k)


def loop(target: str, ws: list, rows: int):
    """A jitted function running every matrix in `ws` over all its layers once -> a scalar (kept live)."""

    def run(ws):
        total = jnp.float32(0)
        for w in ws:
            x = jnp.ones((rows, w.shape[-2]), jnp.float32)

            def body(layer, acc, w=w, x=x):
                return acc + kernel_call(target, x, w, layer)[0, 0]

            total = jax.lax.fori_loop(0, w.codes.shape[0], body, total)
        return total

    return jax.jit(run)


def per_call_times(fns: dict, ws: list, calls: int, repeats: int) -> dict[str, float]:
    """label -> median seconds per call, the labelled functions timed interleaved, repeat by repeat."""
    for fn in fns.values():
        fn(ws).block_until_ready()
    times = {label: [] for label in fns}
    for _ in range(repeats):
        for label, fn in fns.items():
            start = time.perf_counter()
            fn(ws).block_until_ready()
            times[label].append((time.perf_counter() - start) / calls)
    return {label: statistics.median(ts) for label, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", help="another layer_matmul_q.cc, timed beside the current one")
    args = parser.parse_args()
    native_quantized._load()
    targets = {"now": native_quantized.TARGET}
    if args.baseline:
        load_target(args.baseline, "TrellisLayerMatmulQ", BASELINE_TARGET)
        targets = {"base": BASELINE_TARGET, **targets}
    params = load_model(weight_format="packed").params
    columns = " | ".join(f"{label} us | {label} Gw/s | {label} GB/s" for label in targets)
    print(f"| matrix | rows | K x N | {columns} |\n|---|---|---|" + "---|" * 3 * len(targets))
    for rows in args.rows:
        for name, ws in benches(params):
            calls = sum(w.codes.shape[0] for w in ws)
            per = 1 if name == "step" else calls  # "step": the whole loop; else one call
            weights = sum(w.shape[-2] * w.shape[-1] * w.codes.shape[0] for w in ws) / per
            nbytes = sum(w.nbytes for w in ws) / per
            fns = {label: loop(target, ws, rows) for label, target in targets.items()}
            times = per_call_times(fns, ws, per, args.repeats)
            shape = f"{calls} calls" if name == "step" else f"{ws[0].shape[-2]} x {ws[0].shape[-1]}"
            cells = []
            for t in times.values():
                cells += [f"{t * 1e6:.0f}", f"{weights / t / 1e9:.2f}", f"{nbytes / t / 1e9:.2f}"]
            print(f"| {name} | {rows} | {shape} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
