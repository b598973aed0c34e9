"""Rotary position embeddings (Hugging Face "rotate_half" layout) with Llama-3 / linear scaling.

Contract: `inverse_frequencies(config)` is computed on the host (numpy, float32 as Hugging Face does) from
static config, so it folds into the compiled program as a constant; `apply_rope(x[T, H, D], positions[T],
inv_freq[D/2])` rotates the two halves of each head. GGUF files store Q/K rows permuted for llama.cpp's
interleaved rotation; the loader undoes that so this one layout serves every checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

SUPPORTED_KINDS = ("linear", "llama3", "freq_factors")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """How inverse frequencies are rescaled for long contexts. Hashable (tuples only)."""

    kind: str
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192
    freq_factors: tuple[float, ...] | None = None  # GGUF `rope_freqs.weight`: inv_freq[i] /= factors[i]

    def __post_init__(self):
        if self.kind not in SUPPORTED_KINDS:
            raise ValueError(f"unsupported rope scaling {self.kind!r}; supported: {SUPPORTED_KINDS}")
        if self.kind == "freq_factors" and not self.freq_factors:
            raise ValueError("rope scaling 'freq_factors' needs the factors")
        if self.factor <= 0:
            raise ValueError(f"rope scaling factor must be > 0, got {self.factor}")

    @classmethod
    def from_hf(cls, params: Mapping[str, Any] | None) -> RopeScaling | None:
        if not params:
            return None
        kind = params.get("rope_type") or params.get("type")
        if kind in (None, "default"):
            return None
        if kind == "linear":
            return cls("linear", factor=float(params["factor"]))
        if kind == "llama3":
            return cls(
                "llama3",
                factor=float(params["factor"]),
                low_freq_factor=float(params["low_freq_factor"]),
                high_freq_factor=float(params["high_freq_factor"]),
                original_max_position_embeddings=int(params["original_max_position_embeddings"]),
            )
        raise ValueError(f"unsupported rope scaling {kind!r}; supported: {SUPPORTED_KINDS[:2]}")

    @classmethod
    def from_gguf(
        cls, meta: Mapping[str, Any], prefix: str, freq_factors: tuple[float, ...] | None
    ) -> RopeScaling | None:
        if freq_factors is not None:  # Llama-3 GGUFs carry the per-frequency factors as a tensor
            return cls("freq_factors", freq_factors=tuple(float(f) for f in freq_factors))
        kind = meta.get(prefix + "rope.scaling.type")
        if kind in (None, "none"):
            return None
        if kind == "linear":
            return cls("linear", factor=float(meta[prefix + "rope.scaling.factor"]))
        raise ValueError(f"unsupported GGUF rope scaling {kind!r}; supported: linear, rope_freqs tensor")


def inverse_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None) -> np.ndarray:
    """inv_freq[head_dim // 2] float32, matching transformers' ROPE_INIT_FUNCTIONS."""
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    inv_freq = (1.0 / (np.float32(theta) ** exponents)).astype(np.float32)
    if scaling is None:
        return inv_freq
    if scaling.kind == "linear":
        return (inv_freq / np.float32(scaling.factor)).astype(np.float32)
    if scaling.kind == "freq_factors":
        factors = np.asarray(scaling.freq_factors, np.float32)
        if factors.shape != inv_freq.shape:
            raise ValueError(f"rope freq_factors has {factors.size} entries, head_dim/2 is {inv_freq.size}")
        return (inv_freq / factors).astype(np.float32)
    return _llama3_inverse_frequencies(inv_freq, scaling)


def _llama3_inverse_frequencies(inv_freq: np.ndarray, s: RopeScaling) -> np.ndarray:
    # Long wavelengths are slowed by `factor`, short ones kept, the band between interpolated smoothly.
    old_len = s.original_max_position_embeddings
    low_freq_wavelen = old_len / s.low_freq_factor
    high_freq_wavelen = old_len / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return np.where(is_medium, smoothed, scaled).astype(np.float32)


def apply_rope(x: jnp.ndarray, positions: jnp.ndarray, inv_freq: np.ndarray) -> jnp.ndarray:
    """x [T, H, D] rotated by angle positions[t] * inv_freq (halves layout). Computed in float32."""
    angles = positions.astype(jnp.float32)[:, None] * jnp.asarray(inv_freq)[None, :]  # [T, D/2]
    cos = jnp.cos(angles)[:, None, :]
    sin = jnp.sin(angles)[:, None, :]
    x32 = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    x1, x2 = x32[..., :half], x32[..., half:]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x.dtype)
