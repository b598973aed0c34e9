"""Quantizing float matrices into the matmul op's packed layout (quantized.py), per group of 32 along K, in
numpy: what `--quantization int8|int4` does to a float checkpoint at load.

Contract: `quantize(w, scheme) -> QuantizedWeight` for a float [..., K, N] matrix (K the input features, a
multiple of 32), numpy-backed, in a GGUF block format the op already multiplies packed (`FORMATS`):
  "int8" -> Q8_0: symmetric; per group d = absmax / 127, codes q = round(w / d) in [-127, 127]; w ~ d*q.
  "int4" -> Q4_1: asymmetric; per group m = min, d = (max - m) / 15, codes q = round((w - m) / d) in
            [0, 15]; w ~ d*q + m.
The layout stores d (and m) as float16, as GGUF does. Unlike llama.cpp's quantizer, which rounds the codes
against the float32 d and then stores d rounded to nearest, this one rounds d UP and m DOWN to float16
first and takes the codes from the stored values, so no code is clipped and every element is within half
a stored step of its float value, exactly (up to float32 rounding of the arithmetic, ~1e-7 relative):
  int8: |w - d*q| <= d/2,          d = f16_up(absmax / 127)
  int4: |w - (d*q + m)| <= d/2,    d = f16_up((max - f16_down(min)) / 15)
Rounding up to float16 costs at most 2^-10 of the value, or 2^-24 absolute where it is subnormal (a step
below 2^-14: groups with absmax < ~8e-3 for int8, range < ~1e-3 for int4), so d/2 is about absmax / 254
(int8) or range / 30 (int4); int4's also grows by the rounding of m (2^-10 of |min|), small next to the
range for weights centred on zero. `bound(w)`: d/2 per element, [..., K, N], from the stored scales.
A NaN or infinity, a step beyond float16's range, or K not a multiple of 32 is a ValueError.
"""

from __future__ import annotations

import numpy as np

from pallas_kernels.matmul import quantized

FORMATS = {"int8": "Q8_0", "int4": "Q4_1"}
GROUP = quantized.GROUP


def quantize(w, scheme: str) -> quantized.QuantizedWeight:
    """float [..., K, N] -> packed [..., K, N] in FORMATS[scheme]; see the module docstring."""
    if scheme not in FORMATS:
        raise ValueError(f"unknown quantization {scheme!r}; use one of {tuple(FORMATS)}")
    w = np.asarray(w, np.float32)
    if w.ndim < 2 or w.shape[-2] % GROUP:
        raise ValueError(f"quantize: need a [..., K, N] matrix with K a multiple of {GROUP}, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("quantize: the matrix holds NaN or infinity")
    *lead, k, n = w.shape
    groups = np.swapaxes(w, -1, -2).reshape(*lead, n, k // GROUP, GROUP)  # GGUF's rows: [..., N, K/32, 32]
    return _q8_0(groups) if scheme == "int8" else _q4_1(groups)


def _q8_0(groups):
    d = _f16_up(np.abs(groups).max(axis=-1) / np.float32(127))
    codes = np.rint(_divide(groups, d)).clip(-127, 127).astype(np.int8)
    return quantized.QuantizedWeight(codes, d, None, "Q8_0")


def _q4_1(groups):
    m = _f16_down(groups.min(axis=-1))
    d = _f16_up((groups.max(axis=-1) - m.astype(np.float32)) / np.float32(15))
    q = np.rint(_divide(groups - m.astype(np.float32)[..., None], d)).clip(0, 15).astype(np.uint8)
    codes = q[..., :16] | (q[..., 16:] << 4)  # byte j: element j low, element j+16 high (GGUF's order)
    return quantized.QuantizedWeight(np.ascontiguousarray(codes), d, m, "Q4_1")


def _divide(groups, d):
    """groups / d per group; 0 where d is 0 (an all-equal group: every code 0)."""
    d32 = d.astype(np.float32)[..., None]
    return np.divide(groups, d32, out=np.zeros_like(groups), where=d32 > 0)


def _f16_up(v):
    """The least float16 >= v (v >= 0, float32)."""
    h = v.astype(np.float16)
    low = h.astype(np.float32) < v
    h[low] = np.nextafter(h[low], np.float16(np.inf))
    if np.isinf(h).any():
        raise ValueError(f"quantize: a group's step {float(v.max()):.3g} is beyond float16's range")
    return h


def _f16_down(v):
    """The greatest float16 <= v (float32)."""
    h = v.astype(np.float16)
    high = h.astype(np.float32) > v
    h[high] = np.nextafter(h[high], np.float16(-np.inf))
    if np.isinf(h).any():
        raise ValueError(f"quantize: a group's minimum {float(v.min()):.3g} is beyond float16's range")
    return h


def bound(w: quantized.QuantizedWeight) -> np.ndarray:
    """Half a stored step per element, float32 [..., K, N]: the most |w - dequantized| may be."""
    half = np.repeat(w.scales.astype(np.float32) / 2, GROUP, axis=-1)  # [..., N, K]
    return np.swapaxes(half, -1, -2)
