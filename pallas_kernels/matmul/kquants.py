"""GGUF K-quants (Q4_K, Q5_K, Q6_K) kept in the file's own factors: the matmul op's layout for them.

Contract: one weight [..., K, N] (K grouped by 32, 8 groups to a 256-element super-block) is three arrays,
per output column n (the `QuantizedWeight` fields, quantized.py):
  codes  [..., N, K/32, B] uint8: Q4_K B = 16 (byte j: element j in the low nibble, j+16 in the high one);
         Q5_K B = 32 (q in [0, 31]); Q6_K B = 24: bytes 0..15 the low 4 bits of q as Q4_K's nibbles, bytes
         16..23 the high 2 bits (element j's at byte 16 + j % 8, bits 2 * (j // 8)), q in [0, 63];
  scales [..., N, K/256, F] float16: each super-block's d and dmin (F = 2; Q6_K: d only, F = 1);
  mins   [..., N, K/32, 2]: each group's integer factors, uint8 (sc, m) in [0, 63] for Q4_K / Q5_K,
         int8 (sc of elements 0..15, sc of 16..31) for Q6_K.
Element j of group g in super-block s is (d_s*sc_g)*q - (dmin_s*m_g) (Q4_K, Q5_K) or (d_s*sc)*(q-32)
(Q6_K), each product formed in float32 as `gguf.quants.dequantize` forms it (d has 11 significant bits,
sc 6 or 8: d*sc is exact in float32), so the layout is lossless and the arithmetic the same bit for bit.
Memory per weight: Q4_K 0.578 bytes (the file: 0.5625), Q5_K 1.08 (0.6875), Q6_K 0.82 (0.8203).
`from_gguf(raw, fmt, rows, cols) -> (codes, scales, mins)` numpy; `group_factors(scales, mins, fmt, xp)`
-> float32 (scale, min) per 16 elements [..., N, K/16] (min None for Q6_K); `value_pieces(codes, scales,
mins, fmt, xp)` -> the dequantized values as runs of contiguous elements (quantized.value_pieces).
"""

from __future__ import annotations

import numpy as np

FORMATS = ("Q4_K", "Q5_K", "Q6_K")
SUPER = 256  # elements in a super-block
GROUPS = SUPER // 32
BLOCK_BYTES = {"Q4_K": 2 + 2 + 12 + 128, "Q5_K": 2 + 2 + 12 + 32 + 128, "Q6_K": 128 + 64 + 16 + 2}
CODE_BYTES = {"Q4_K": 16, "Q5_K": 32, "Q6_K": 24}


def _scale_min(packed):
    """The 8 six-bit (scale, min) pairs packed in a Q4_K/Q5_K super-block's 12 bytes [B, 12] -> two [B, 8]."""
    d, m, m_d = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    sc = np.concatenate([d & 0x3F, (m_d & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (m_d >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc, mn


def _nibbles(q):
    """[..., 32] values < 16 -> [..., 16] bytes: element j low, element j+16 high."""
    return q[..., :16] | (q[..., 16:] << 4)


def from_gguf(raw, fmt: str, rows: int, cols: int):
    """GGUF super-blocks of a [rows, cols] tensor -> (codes, scales, mins) as the module docstring lays them
    out ([rows] outputs first). The bit fields are split and regrouped, never converted to float."""
    if cols % SUPER:
        raise ValueError(f"{fmt}: {cols} input features are not a whole number of {SUPER}-element super-blocks")
    blocks = np.asarray(raw, np.uint8).reshape(-1, BLOCK_BYTES[fmt])
    nb, groups = blocks.shape[0], cols // 32
    if fmt == "Q6_K":
        ql, qh = blocks[:, 0:128], blocks[:, 128:192]
        low = (ql.reshape(nb, 2, 1, 64) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)) & 0x0F
        high = (qh.reshape(nb, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)) & 0x03
        low, high = low.reshape(rows, groups, 32), high.reshape(rows, groups, 4, 8)  # element order
        top = (high << np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)).sum(axis=-2, dtype=np.uint8)
        codes = np.concatenate([_nibbles(low), top], axis=-1)
        sc = np.ascontiguousarray(blocks[:, 192:208]).view(np.int8).reshape(rows, groups, 2)
        d = np.ascontiguousarray(blocks[:, 208:210]).view(np.float16).reshape(rows, cols // SUPER, 1)
        return codes, d, sc
    factors = np.ascontiguousarray(blocks[:, 0:4]).view(np.float16).reshape(rows, cols // SUPER, 2)
    sc, mn = _scale_min(blocks[:, 4:16])
    mins = np.stack([sc, mn], axis=-1).reshape(rows, groups, 2)
    qs = blocks[:, -128:]
    q = ((qs.reshape(nb, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)) & 0x0F).reshape(nb, 8, 32)
    if fmt == "Q5_K":
        qh = blocks[:, 16:48]
        bits = (qh.reshape(nb, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & 0x01
        return np.ascontiguousarray((q | (bits << 4)).reshape(rows, groups, 32)), factors, mins
    return np.ascontiguousarray(_nibbles(q.reshape(rows, groups, 32))), factors, mins


def group_factors(scales, mins, fmt: str, xp):
    """float32 (scale, min) per 16 elements, [..., N, K/16] each (min None for Q6_K): d*sc and -(dmin*m),
    the products gguf forms; Q4_K / Q5_K's 32-groups give each half the same pair."""
    *lead, n, supers, _ = scales.shape
    per_group = mins.astype(xp.float32).reshape(*lead, n, supers, mins.shape[-2] // supers * 2)
    d = scales[..., 0:1].astype(xp.float32)
    if fmt == "Q6_K":  # one sc per 16 elements already
        return (d * per_group).reshape(*lead, n, -1), None
    sc, m = per_group[..., 0::2], per_group[..., 1::2]
    scale, low = d * sc, -(scales[..., 1:2].astype(xp.float32) * m)
    twice = lambda a: xp.repeat(a.reshape(*lead, n, -1), 2, axis=-1)  # noqa: E731
    return twice(scale), twice(low)


def value_pieces(codes, scales, mins, fmt: str, xp):
    """The dequantized values of each 32-group as runs of contiguous elements, float32 [..., N, K/32, length]
    each, whose concatenation on the last axis is element order: Q4_K / Q5_K two halves (0..15, 16..31),
    Q6_K four quarters of 8. gguf's arithmetic: (d*sc)*q + (-(dmin*m)), or (d*sc)*(q-32) for Q6_K.
    Why runs: a dot can take each run with the matching slice of x, never joining the nibbles back."""
    scale, low = group_factors(scales, mins, fmt, xp)  # [..., N, K/16]: one pair per 16 elements
    *lead, n, groups, _ = codes.shape
    scale = scale.reshape(*lead, n, groups, 2, 1)
    low = None if low is None else low.reshape(*lead, n, groups, 2, 1)
    if fmt == "Q6_K":
        quarters = []
        for i in range(4):  # elements 8i .. 8i+7: nibbles of bytes 8(i%2).., high bits at shift 2i
            nibbles = codes[..., 8 * (i % 2) : 8 * (i % 2) + 8]
            nibbles = nibbles & 0x0F if i < 2 else nibbles >> 4
            q = nibbles | (((codes[..., 16:24] >> (2 * i)) & 0x03) << 4)
            quarters.append(scale[..., i // 2, :] * (q.astype(xp.int8) - xp.int8(32)).astype(xp.float32))
        return quarters
    halves = (codes[..., :16], codes[..., 16:]) if fmt == "Q5_K" else (codes & 0x0F, codes >> 4)
    return [scale[..., h, :] * q.astype(xp.float32) + low[..., h, :] for h, q in enumerate(halves)]
