"""The matmul op's XLA backend for packed weights (quantized.py) on CPU: the codes dequantized a chunk of
output columns at a time inside a loop, each chunk dotted while it is still in cache.

Contract: `linear(x, w, layer=None) -> [M, N] float32`: x [M, K] float32 @ dequantize(w[layer]) (or of a
plain [K, N] packed w when layer is None), with float32 sums; any format quantized.py holds, a LayerMix
included. Within the op's tolerance of reference.py (the sums run in another order), not bit for bit.
`CHUNK_BYTES`: the float32 bytes of one chunk's dequantized columns at 9 <= M <= 31; `chunk_bytes(m)` scales
it with M (x1 to x16 at M >= 256). At M <= SMALL_ROWS (decode) chunks are SMALL_CHUNK_BYTES and the columns
are cut into SPLITS contiguous spans, each its own loop.

Why chunks (docs/benchmarks/quantized.md, "the XLA path"): XLA:CPU gives every buffer of a program fresh
pages each run, and here a page fault costs ~4 us, ~3.7 ns per float32 written; dequantizing a whole
matrix (the Q8_0 LM head alone is 113 MB of float32) spent most of a decode step faulting. A lax.map over
fixed-size column chunks keeps every temporary under CHUNK_BYTES (L2-sized), so the only big reads are
the packed codes. Bigger steps take bigger chunks: each chunk's dot re-packs x, and a wide dot can use
both cores, while a fault's cost is spread over M rows of work (measured at M = 64 and 256: 4 MiB
chunks ~25 % faster than 256 KiB ones, in wall time ~2x). Why halves: each format's group is dequantized as pieces of contiguous elements (Q4's
low and high nibbles, Q6_K's four quarters), each multiplied with the matching slice of x, because joining
the nibbles back into element order (a concatenate along the minor axis) halves the dequantize's speed.
Why M = 1 is padded to 2 rows: XLA:CPU's one-row dot on a transposed operand is ~2.5x slower than its
two-row one on this CPU (measured; the spare row is zeros and dropped).
Why smaller chunks and two loops at M <= 8: measured on the model-shaped step (tools/
bench_matmul_xla_packed.py, A/B in one process) at M = 1, fastest of 15: 256 KiB one loop 71 ms, 128 KiB one
loop 54, 128 KiB in two loops 47 (64 KiB 65, 256 KiB 62, four loops 47); at M = 8: 122, 79, 68. The two
loops run one after the other (wall = CPU), so the gain is not the second core; the spans just give XLA
two shorter loops, which it schedules better (not explained further).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.matmul import quantized

CHUNK_BYTES = 1 << 18
SMALL_ROWS = 8
SMALL_CHUNK_BYTES = 1 << 17
SPLITS = 2


def chunk_bytes(m: int) -> int:
    """The float32 bytes of one chunk's columns for an M-row step; see the module docstring."""
    if m <= SMALL_ROWS:
        return SMALL_CHUNK_BYTES
    return CHUNK_BYTES * min(16, max(1, m // 16))


def splits(m: int) -> int:
    """How many contiguous column spans, each its own chunk loop, an M-row step cuts N into."""
    return SPLITS if m <= SMALL_ROWS else 1


def linear(x, w, layer=None):
    """x [M, K] @ dequantize(w[layer]) -> [M, N] float32; see the module docstring."""
    x = x.astype(jnp.float32)
    if x.shape[0] == 1:
        return linear(jnp.concatenate([x, jnp.zeros_like(x)]), w, layer)[:1]
    if layer is None:
        return _chunked(x, w, None)
    return quantized.select(w, layer, lambda part, index: _chunked(x, part, index))


def _chunked(x, w, layer):
    """x @ the packed [.., K, N] w (at `layer` when stacked): N cut into splits(M) spans, each a loop over
    chunk_bytes(M) of columns per iteration, then a tail chunk where the width does not divide the span."""
    m = x.shape[0]
    k, n = w.shape[-2:]
    pieces = _x_pieces(x, w.fmt)

    def columns(start, size):
        return _dot(pieces, _columns(w, layer, start, size))

    span = -(-n // splits(m))
    outs = []
    for first in range(0, n, span):
        size = min(span, n - first)
        width = max(1, min(size, chunk_bytes(m) // (4 * k)))
        count, tail = divmod(size, width)
        body = jax.lax.map(
            lambda c, first=first, width=width: columns(first + c * width, width), jnp.arange(count, dtype=jnp.int32)
        )  # [C, M, W]
        outs.append(body.transpose(1, 0, 2).reshape(m, count * width))
        if tail:
            outs.append(columns(first + count * width, tail))
    return jnp.concatenate(outs, axis=1) if len(outs) > 1 else outs[0]


def _columns(w, layer, start, size):
    """Output columns [start, start + size) of w (at `layer`) as a QuantizedWeight [size, ...], sliced in
    place (every field has the output columns on the axis after the layer's)."""

    def cut(a):
        if a is None:
            return None
        if layer is not None:
            a = jax.lax.dynamic_index_in_dim(a, layer, axis=0, keepdims=False)
        return jax.lax.dynamic_slice_in_dim(a, start, size, axis=0)

    return quantized.QuantizedWeight(cut(w.codes), cut(w.scales), cut(w.mins), w.fmt)


def _dot(x_pieces, part):
    """sum over pieces of x_piece [M, G*S] @ values [size, G*S].T -> [M, size] float32."""
    total = None
    for xs, values in zip(x_pieces, quantized.value_pieces(part, jnp), strict=True):
        size = values.shape[0]
        y = xs @ values.reshape(size, -1).T
        total = y if total is None else total + y
    return total


def _x_pieces(x, fmt):
    """x [M, K] cut into the element runs `quantized.piece_spans(fmt)` of every 32-group, each [M, K/32 * length]."""
    m = x.shape[0]
    groups = x.reshape(m, -1, quantized.GROUP)
    return [groups[:, :, s : s + n].reshape(m, -1) for s, n in quantized.piece_spans(fmt)]
