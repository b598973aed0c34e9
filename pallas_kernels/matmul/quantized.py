"""GGUF block quantizations kept packed: the matmul op's quantized layout. Q8_0, Q4_0, Q4_1 as the file has
them; the K-quants Q4_K, Q5_K, Q6_K repacked into the same group layout with float32 scales.

Contract: a `QuantizedWeight` stands for a float matrix [..., K, N] (K = the input features, grouped by G
along K, as GGUF groups each output row; G = 16 for Q6_K, 32 otherwise, `group_size(fmt)`) and holds, per
output column n and group g:
  codes  [..., N, K/G, G] int8 (Q8_0; Q6_K: q-32 in [-32, 31]), [..., N, K/32, 32] uint8 (Q5_K: q in
         [0, 31]) or [..., N, K/32, 16] uint8 (Q4_0/Q4_1/Q4_K: byte j holds element j in its low nibble and
         element j+16 in its high one, GGUF's own order for Q4_0/Q4_1);
  scales [..., N, K/G]: float16 GGUF d (Q8_0/Q4_0/Q4_1), float32 d*sc (K-quants: the super-block's f16 d
         times the group's 6- or 8-bit scale, which float32 holds exactly: 11 x 8 significant bits);
  mins   [..., N, K/32]: float16 m (Q4_1), float32 -(dmin*m) (Q4_K/Q5_K), None otherwise.
Element (k, n) is d*q (Q8_0, Q6_K), d*(q-8) (Q4_0) or d*q + m (Q4_1, Q4_K, Q5_K; d*q + -(dm) is
d*q - dm bit for bit), computed in float32 exactly as `gguf.quants.dequantize` does: the repacking is lossless
(K-quant memory: Q4_K 24 bytes per 32 weights against the file's 18, Q5_K 40 against 22, Q6_K 24 per 16
against 13.1: the float32 scales and byte-wide 5/6-bit codes; docs/benchmarks/quantized.md) (tests/kernels/test_matmul_quantized.py checks
every tensor of the default model bit for bit). It is a pytree (the format is static), so the layer scan
slices it like the float weights, and `shape` / `ndim` give the logical shape params checks expect.
`from_gguf(raw, fmt, rows, cols)`: one GGUF tensor's raw block bytes -> QuantizedWeight [cols, rows] (numpy).
`dequantize_numpy(w)` -> the float32 [..., N, K] rows as GGUF lays them out (the oracle's arithmetic);
`dequantize(w)` the same in jnp; `promote(ws)`: per-layer K-quants of differing formats -> the same in
K16 (not a GGUF type: 16-groups, int8 codes, float32 scale and min, d*q + m; lossless), or None;
`stack`, `concatenate` (along N), `take(w, i)`, `permute_rows`,
`gather_columns(w, ids)` (an embedding lookup on a packed embedding, stored as its tied head [H, V]).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

GROUP = 32
FORMATS = ("Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K")
K_QUANTS = ("Q4_K", "Q5_K", "Q6_K")
K16 = "K16"  # not a GGUF type: the common layout of a matrix whose layers mix K-quants (`promote`)
_BLOCK_BYTES = {"Q8_0": 2 + 32, "Q4_0": 2 + 16, "Q4_1": 4 + 16}
_SUPER = 256  # elements in a K-quant super-block
_SUPER_BYTES = {"Q4_K": 2 + 2 + 12 + 128, "Q5_K": 2 + 2 + 12 + 32 + 128, "Q6_K": 128 + 64 + 16 + 2}


def group_size(fmt: str) -> int:
    """Elements per scale along K."""
    return 16 if fmt in ("Q6_K", K16) else GROUP


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
        return (*lead, groups * group_size(self.fmt), n)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in (self.codes, self.scales, self.mins) if a is not None)


def is_quantized(w) -> bool:
    return isinstance(w, QuantizedWeight)


def from_gguf(raw, fmt: str, rows: int, cols: int) -> QuantizedWeight:
    """GGUF blocks of a [rows, cols] tensor (torch layout: rows = outputs N, cols = inputs K) -> the packed
    [K, N] weight, numpy-backed. Lossless: the bytes are split, not converted."""
    if fmt not in FORMATS:
        raise ValueError(f"not a packed format: {fmt}; use one of {FORMATS}")
    if fmt in K_QUANTS:
        return _from_k_quant(raw, fmt, rows, cols)
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


def _scale_min(scales):
    """The 8 six-bit (scale, min) pairs packed in a Q4_K/Q5_K super-block's 12 bytes [B, 12] -> two [B, 8]."""
    d, m, m_d = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]
    sc = np.concatenate([d & 0x3F, (m_d & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (m_d >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc, mn


def _from_k_quant(raw, fmt, rows, cols):
    # Decodes the super-blocks' bit fields as gguf.quants does, keeping codes and per-group float32 factors.
    if cols % _SUPER:
        raise ValueError(f"{fmt}: {cols} input features are not a whole number of {_SUPER}-element super-blocks")
    blocks = np.asarray(raw, np.uint8).reshape(-1, _SUPER_BYTES[fmt])
    nb = blocks.shape[0]
    if fmt == "Q6_K":
        ql, qh = blocks[:, 0:128], blocks[:, 128:192]
        sc = np.ascontiguousarray(blocks[:, 192:208]).view(np.int8).astype(np.float32)
        d = np.ascontiguousarray(blocks[:, 208:210]).view(np.float16).astype(np.float32)
        low = (ql.reshape(nb, 2, 1, 64) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)) & 0x0F
        high = (qh.reshape(nb, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)) & 0x03
        q = (low.reshape(nb, 8, 32) | (high.reshape(nb, 8, 32) << 4)).astype(np.int8) - np.int8(32)
        codes = q.reshape(rows, cols // 16, 16)
        return QuantizedWeight(codes, (d * sc).reshape(rows, cols // 16), None, fmt)
    d = np.ascontiguousarray(blocks[:, 0:2]).view(np.float16).astype(np.float32)
    dmin = np.ascontiguousarray(blocks[:, 2:4]).view(np.float16).astype(np.float32)
    sc, mn = _scale_min(blocks[:, 4:16])
    scales = (d * sc.astype(np.float32)).reshape(rows, cols // GROUP)
    mins = -(dmin * mn.astype(np.float32)).reshape(rows, cols // GROUP)
    qs = blocks[:, -128:]
    q = ((qs.reshape(nb, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)) & 0x0F).reshape(nb, 8, 32)
    if fmt == "Q5_K":
        qh = blocks[:, 16:48]
        bits = (qh.reshape(nb, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & 0x01
        q = q | (bits << 4)
        return QuantizedWeight(np.ascontiguousarray(q.reshape(rows, cols // GROUP, GROUP)), scales, mins, fmt)
    q = q.reshape(rows, cols // GROUP, GROUP)
    return QuantizedWeight(np.ascontiguousarray(q[..., :16] | (q[..., 16:] << 4)), scales, mins, fmt)


def _dequantize(w: QuantizedWeight, xp):
    d = w.scales.astype(xp.float32)[..., None]
    if w.fmt == K16:
        values = d * w.codes.astype(xp.float32) + w.mins[..., None]
    elif w.fmt in ("Q8_0", "Q6_K"):
        q = w.codes.astype(xp.float32)
        values = q * d
    elif w.fmt == "Q5_K":
        values = d * w.codes.astype(xp.float32) + w.mins[..., None]
    else:
        nibbles = xp.concatenate([w.codes & 0x0F, w.codes >> 4], axis=-1)  # elements 0..15, then 16..31
        if w.fmt == "Q4_0":
            values = d * (nibbles.astype(xp.int8) - 8).astype(xp.float32)
        else:
            values = d * nibbles.astype(xp.float32) + w.mins.astype(xp.float32)[..., None]
    *lead, n, groups, size = values.shape
    return values.reshape(*lead, n, groups * size)


def dequantize_numpy(w: QuantizedWeight) -> np.ndarray:
    """float32 [..., N, K] (GGUF's row layout), with gguf.quants' arithmetic."""
    return _dequantize(w, np)


def dequantize(w: QuantizedWeight):
    """float32 [..., N, K] in jnp (inside a jitted step: the layer's matrix, then a dot)."""
    return _dequantize(w, jnp)


def promote(ws):
    """Per-layer K-quant weights of differing formats -> the same weights as K16, losslessly; None when
    any is not a K-quant. K16: codes [N, K/16, 16] int8, scales and mins [N, K/16] float32, element d*q + m:
    Q4_K/Q5_K's groups split in two (scale and min repeated), Q6_K's min -0.0 (x + -0.0 is x bit for bit)."""
    if not all(w.fmt in K_QUANTS for w in ws):
        return None
    return [_to_k16(w) for w in ws]


def _to_k16(w):
    n, groups, _ = w.codes.shape
    if w.fmt == "Q6_K":
        return QuantizedWeight(w.codes, w.scales, np.full(w.scales.shape, -0.0, np.float32), K16)
    codes = np.concatenate([w.codes & 0x0F, w.codes >> 4], axis=-1) if w.fmt == "Q4_K" else w.codes
    halves = codes.astype(np.int8).reshape(n, groups * 2, 16)
    return QuantizedWeight(halves, np.repeat(w.scales, 2, axis=-1), np.repeat(w.mins, 2, axis=-1), K16)


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
    return _map(lambda parts: jnp.asarray(np.stack(parts)), *ws)


def concatenate(ws) -> QuantizedWeight:
    """Weights reading the same input, joined along N (the fused projections)."""
    _same_format(ws)
    return _map(lambda parts: jnp.concatenate(parts, axis=-3 if parts[0].ndim == ws[0].codes.ndim else -2), *ws)


def gather_columns(w: QuantizedWeight, ids):
    """float32 [len(ids), K]: the dequantized output columns `ids` of an unstacked [K, N] weight, as rows
    (an embedding kept packed is its tied head's [H, V] weight: a lookup is a gather of head columns)."""
    return dequantize(jax.tree.map(lambda a: a[ids], w))


def to_device(w: QuantizedWeight) -> QuantizedWeight:
    """A numpy-backed weight as jnp arrays."""
    return jax.tree.map(jnp.asarray, w)


def take(w: QuantizedWeight, index) -> QuantizedWeight:
    """w[index] along the leading (layer) axis."""
    return jax.tree_util.tree_map(lambda a: jax.lax.dynamic_index_in_dim(a, index, axis=0, keepdims=False), w)


def permute_rows(w: QuantizedWeight, permute) -> QuantizedWeight:
    """w with `permute` (a function of a [N, ...] array) applied to its output rows (numpy)."""
    return jax.tree_util.tree_map(permute, w)
