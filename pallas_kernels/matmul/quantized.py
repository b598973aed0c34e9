"""GGUF block quantizations kept packed: the matmul op's quantized layout. Q8_0, Q4_0, Q4_1 as the file has
them; the K-quants Q4_K, Q5_K, Q6_K in their own super-block factors (kquants.py has their layout).

Contract: a `QuantizedWeight` stands for a float matrix [..., K, N] (K = the input features, grouped by 32
along K, as GGUF groups each output row) and holds, per output column n and group g:
  codes  [..., N, K/32, 32] int8 (Q8_0) or [..., N, K/32, 16] uint8 (Q4_0/Q4_1: byte j holds element j in
         its low nibble and element j+16 in its high one, GGUF's own order); K-quants: kquants.py;
  scales [..., N, K/32] float16 GGUF d (K-quants: the super-blocks' float16 factors, kquants.py);
  mins   [..., N, K/32]: float16 m (Q4_1), None (Q8_0/Q4_0); K-quants: the groups' 8-bit factors.
Element (k, n) is d*q (Q8_0), d*(q-8) (Q4_0) or d*q + m (Q4_1), computed in float32 exactly as
`gguf.quants.dequantize` does: the repacking is lossless (tests/kernels/test_matmul_quantized.py checks
every tensor of the default model bit for bit; test_matmul_kquants.py the K-quants). It is a pytree (the
format is static), so the layer scan slices it like the float weights, and `shape` / `ndim` give the
logical shape params checks expect.
`from_gguf(raw, fmt, rows, cols)`: one GGUF tensor's raw block bytes -> QuantizedWeight [cols, rows] (numpy).
`dequantize_numpy(w)` -> the float32 [..., N, K] rows as GGUF lays them out (the oracle's arithmetic);
`dequantize(w)` the same in jnp; `dequantize_layer(w, layer)` one stacked layer's rows (a LayerMix too);
`mix(ws)`: per-layer weights of differing formats -> a `LayerMix` (each format's layers stacked as they
are; `select(w, layer, fn)` runs fn on the part holding a layer); `is_quantized` is true of both kinds;
`stack`, `concatenate` (along N), `take(w, i)`, `permute_rows`,
`gather_columns(w, ids)` (an embedding lookup on a packed embedding, stored as its tied head [H, V]).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.matmul import kquants

GROUP = 32
FORMATS = ("Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K")
K_QUANTS = ("Q4_K", "Q5_K", "Q6_K")
_BLOCK_BYTES = {"Q8_0": 2 + 32, "Q4_0": 2 + 16, "Q4_1": 4 + 16}


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True)
class QuantizedWeight:
    codes: object
    scales: object
    mins: object
    fmt: str

    def tree_flatten(self):
        return (self.codes, self.scales, self.mins), self.fmt

    @classmethod
    def tree_unflatten(cls, fmt, children):
        return cls(*children, fmt)

    @property
    def shape(self) -> tuple:
        *lead, n, groups, _ = self.codes.shape
        return (*lead, groups * GROUP, n)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in (self.codes, self.scales, self.mins) if a is not None)


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True)
class LayerMix:
    """Stacked layers whose formats differ (Q4_K_M's attn_v and ffn_down: Q6_K on some layers, Q4_K on the
    rest), each kept in its own: `parts`, one stacked [L_i, K, N] QuantizedWeight per format, and `which`
    (static), the part holding each layer; a layer's index in its part is its rank among that part's."""

    parts: tuple
    which: tuple

    def tree_flatten(self):
        return self.parts, self.which

    @classmethod
    def tree_unflatten(cls, which, parts):
        return cls(tuple(parts), which)

    @property
    def index(self) -> tuple:
        return tuple(self.which[:i].count(part) for i, part in enumerate(self.which))

    @property
    def fmt(self) -> str:
        return "+".join(part.fmt for part in self.parts)

    @property
    def shape(self) -> tuple:
        return (len(self.which), *self.parts[0].shape[1:])

    @property
    def ndim(self) -> int:
        return 3

    @property
    def nbytes(self) -> int:
        return sum(part.nbytes for part in self.parts)


def is_quantized(w) -> bool:
    """Whether w is a packed weight: a QuantizedWeight or a LayerMix of them."""
    return isinstance(w, (QuantizedWeight, LayerMix))


def is_layer_mix(w) -> bool:
    return isinstance(w, LayerMix)


def from_gguf(raw, fmt: str, rows: int, cols: int) -> QuantizedWeight:
    """GGUF blocks of a [rows, cols] tensor (torch layout: rows = outputs N, cols = inputs K) -> the packed
    [K, N] weight, numpy-backed. Lossless: the bytes are split, not converted."""
    if fmt not in FORMATS:
        raise ValueError(f"not a packed format: {fmt}; use one of {FORMATS}")
    if fmt in K_QUANTS:
        return QuantizedWeight(*kquants.from_gguf(raw, fmt, rows, cols), fmt)
    if cols % GROUP:
        raise ValueError(f"{fmt}: {cols} input features are not a whole number of {GROUP}-blocks")
    blocks = np.asarray(raw, np.uint8).reshape(rows, cols // GROUP, _BLOCK_BYTES[fmt])
    scales = np.ascontiguousarray(blocks[..., 0:2]).view(np.float16)[..., 0]
    if fmt == "Q8_0":
        return QuantizedWeight(np.ascontiguousarray(blocks[..., 2:]).view(np.int8), scales, None, fmt)
    if fmt == "Q4_0":
        return QuantizedWeight(np.ascontiguousarray(blocks[..., 2:]), scales, None, fmt)
    mins = np.ascontiguousarray(blocks[..., 2:4]).view(np.float16)[..., 0]
    return QuantizedWeight(np.ascontiguousarray(blocks[..., 4:]), scales, mins, fmt)


def piece_spans(fmt: str) -> tuple:
    """The (start, length) runs of each 32-group's elements that `value_pieces` yields, in order."""
    if fmt == "Q8_0":
        return ((0, 32),)
    if fmt == "Q6_K":
        return ((0, 8), (8, 8), (16, 8), (24, 8))
    return ((0, 16), (16, 16))


def value_pieces(w: QuantizedWeight, xp) -> list:
    """w's dequantized values as the runs `piece_spans(w.fmt)` of each group, float32 [..., N, K/32, length]
    each, with gguf.quants' arithmetic: the one place each format's arithmetic lives (dequantize joins the
    runs; xla_quantized.py dots each run with its slice of x)."""
    if w.fmt in K_QUANTS:
        return kquants.value_pieces(w.codes, w.scales, w.mins, w.fmt, xp)
    d = w.scales.astype(xp.float32)[..., None]
    if w.fmt == "Q8_0":
        return [w.codes.astype(xp.float32) * d]
    halves = (w.codes & 0x0F, w.codes >> 4)  # elements 0..15, 16..31
    if w.fmt == "Q4_0":
        return [d * (h.astype(xp.int8) - 8).astype(xp.float32) for h in halves]
    m = w.mins.astype(xp.float32)[..., None]
    return [d * h.astype(xp.float32) + m for h in halves]


def _dequantize(w: QuantizedWeight, xp):
    pieces = value_pieces(w, xp)
    values = pieces[0] if len(pieces) == 1 else xp.concatenate(pieces, axis=-1)
    *lead, n, groups, size = values.shape
    return values.reshape(*lead, n, groups * size)


def dequantize_numpy(w: QuantizedWeight) -> np.ndarray:
    """float32 [..., N, K] (GGUF's row layout), with gguf.quants' arithmetic."""
    return _dequantize(w, np)


def dequantize(w: QuantizedWeight):
    """float32 [..., N, K] in jnp (inside a jitted step: the layer's matrix, then a dot)."""
    return _dequantize(w, jnp)


def mix(ws) -> LayerMix:
    """Per-layer weights of differing formats -> a LayerMix: each format's layers stacked as they are."""
    formats = list(dict.fromkeys(w.fmt for w in ws))  # in order of first appearance
    parts = tuple(stack([w for w in ws if w.fmt == fmt]) for fmt in formats)
    return LayerMix(parts, tuple(formats.index(w.fmt) for w in ws))


def select(w, layer, fn):
    """fn(part, index) for the stacked weight holding `layer` (traced or not): `w` itself at `layer`, or a
    LayerMix's part for it at its index there (a switch over the parts when `layer` is traced)."""
    if not is_layer_mix(w):
        return fn(w, layer)
    if isinstance(layer, int):
        return fn(w.parts[w.which[layer]], w.index[layer])
    which = jnp.asarray(w.which, jnp.int32)[layer]
    index = jnp.asarray(w.index, jnp.int32)[layer]
    return jax.lax.switch(which, [lambda i, part=part: fn(part, i) for part in w.parts], index)


def dequantize_layer(w, layer):
    """float32 [N, K]: the rows of stacked w's `layer` (any packed weight, a LayerMix included)."""
    return select(w, layer, lambda part, i: dequantize(take(part, i)))


def _map(fn, *ws):
    mins = None if ws[0].mins is None else fn([w.mins for w in ws])
    return QuantizedWeight(fn([w.codes for w in ws]), fn([w.scales for w in ws]), mins, ws[0].fmt)


def _same_format(ws):
    formats = {w.fmt for w in ws}
    if len(formats) != 1:
        raise ValueError(f"cannot combine quantized weights of formats {sorted(formats)}")


def stack(ws) -> QuantizedWeight:
    """Per-layer weights -> one [L, K, N] weight (numpy-backed in, jnp arrays out)."""
    _same_format(ws)
    # device_put: one copy onto the device; jnp.asarray of a big numpy array peaks at two (an 8B's w_down: 1.3 GB)
    return _map(lambda parts: jax.device_put(np.stack(parts)), *ws)


def concatenate(ws) -> QuantizedWeight:
    """Weights reading the same input, joined along N (the fused projections)."""
    _same_format(ws)
    return _map(lambda parts: jnp.concatenate(parts, axis=-3 if parts[0].ndim == ws[0].codes.ndim else -2), *ws)


def gather_columns(w: QuantizedWeight, ids):
    """float32 [len(ids), K]: the dequantized output columns `ids` of an unstacked [K, N] weight, as rows
    (an embedding kept packed is its tied head's [H, V] weight: a lookup is a gather of head columns)."""
    return dequantize(jax.tree.map(lambda a: a[ids], w))


def to_device(w: QuantizedWeight) -> QuantizedWeight:
    """A numpy-backed weight as jax arrays (one copy each, as `stack`)."""
    return jax.tree.map(jax.device_put, w)


def take(w: QuantizedWeight, index) -> QuantizedWeight:
    """w[index] along the leading (layer) axis."""
    return jax.tree_util.tree_map(lambda a: jax.lax.dynamic_index_in_dim(a, index, axis=0, keepdims=False), w)


def permute_rows(w: QuantizedWeight, permute) -> QuantizedWeight:
    """w with `permute` (a function of a [N, ...] array) applied to its output rows (numpy)."""
    return jax.tree_util.tree_map(permute, w)
