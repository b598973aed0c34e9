"""Random GGUF K-quant tensors (Q4_K, Q5_K, Q6_K) built byte-wise: `gguf.quants` only dequantizes these.

`random_k_quant(fmt, rows, cols, rng, scale=1e-3)` -> the raw uint8 blocks of a [rows, cols] tensor (cols a
multiple of 256). Every byte is random, as any bit pattern is a valid block, except each super-block's
float16 d (and dmin), set to finite values of magnitude ~`scale` (either sign), so the tensor stays finite
and of a size a model can use.
"""

from __future__ import annotations

import numpy as np

SUPER = 256
BLOCK_BYTES = {"Q4_K": 144, "Q5_K": 176, "Q6_K": 210}
_HALF_OFFSETS = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}  # d (and dmin) inside a block


def random_k_quant(fmt: str, rows: int, cols: int, rng, scale: float = 1e-3) -> np.ndarray:
    if cols % SUPER:
        raise ValueError(f"{fmt}: cols {cols} is not a multiple of {SUPER}")
    blocks = rng.integers(0, 256, (rows * cols // SUPER, BLOCK_BYTES[fmt]), dtype=np.uint8)
    for offset in _HALF_OFFSETS[fmt]:
        halves = (rng.uniform(-1, 1, blocks.shape[0]) * scale).astype(np.float16)
        blocks[:, offset : offset + 2] = halves.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(-1)
