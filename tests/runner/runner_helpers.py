"""Helpers for the runner tests (a uniquely named module: test dirs have no __init__.py)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from trellis_jax.model import ModelConfig
from trellis_jax.runner.sampling import SamplingInputs

TINY = ModelConfig(
    architecture="llama",
    vocab_size=101,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    max_position_embeddings=64,
)


def knobs(rows: int, vocab: int, **overrides) -> SamplingInputs:
    """Neutral (greedy) knobs for `rows` rows; overrides are scalars or per-row sequences."""
    values = dict(
        temperature=0.0,
        top_k=0,
        top_p=1.0,
        min_p=0.0,
        presence_penalty=0.0,
        frequency_penalty=0.0,
        repetition_penalty=1.0,
        seed=0,
        rng_step=0,
        num_logprobs=0,
    )
    values.update({k: v for k, v in overrides.items() if k not in ("output_counts", "prompt_mask")})
    dtypes = dict(top_k=np.int32, seed=np.uint32, rng_step=np.int32, num_logprobs=np.int32)
    arrays = {
        k: jnp.asarray(np.broadcast_to(np.asarray(v, dtypes.get(k, np.float32)), (rows,))) for k, v in values.items()
    }
    counts = overrides.get("output_counts", np.zeros((rows, vocab), np.int32))
    prompt = overrides.get("prompt_mask", np.zeros((rows, vocab), np.bool_))
    return SamplingInputs(
        output_counts=jnp.asarray(counts, jnp.int32), prompt_mask=jnp.asarray(prompt, jnp.bool_), **arrays
    )
