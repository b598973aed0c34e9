"""Prefill FLOPs a cache hit saves, from the model's own cost formula (``trellis_jax.model.cost``).

One function does the arithmetic (``prefill_flops_saved``): a request of ``prompt_len`` tokens with
``cached`` of them served from the cache skips their projections, MLP and LM-head rows and their share
of attention; the uncached suffix still attends to the cached prefix, so the saving is exactly
``prefill_flops(prompt_len, 0) - prefill_flops(prompt_len - cached, cached)``.

The default model is SmolLM2-135M (the engine's default); its config numbers are written here so the
simulator needs no checkpoint. ``trellis_jax.model`` (and so jax) is imported lazily: a replay alone
stays pure host Python.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache


@lru_cache(maxsize=1)
def default_model_config():
    """SmolLM2-135M: 30 layers, hidden 576, 9 query / 3 KV heads of 64, MLP 1536, vocab 49152, tied."""
    from trellis_jax.model import ModelConfig

    return ModelConfig(
        architecture="llama",
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        head_dim=64,
        tie_word_embeddings=True,
    )


def prefill_flops_saved(prompt_len: int, cached: int, config=None) -> float:
    """FLOPs not spent on prefill because ``cached`` leading prompt tokens came from the cache."""
    if not 0 <= cached <= prompt_len:
        raise ValueError(f"need 0 <= cached <= prompt_len, got cached={cached}, prompt_len={prompt_len}")
    config = config or default_model_config()
    return config.prefill_flops(prompt_len, 0) - config.prefill_flops(prompt_len - cached, cached)


def total_prefill_flops(prompt_lens: Iterable[int], config=None) -> float:
    """FLOPs to prefill every prompt from scratch (no cache)."""
    config = config or default_model_config()
    return sum(config.prefill_flops(int(n), 0) for n in prompt_lens)


def total_flops_saved(prompt_lens: Iterable[int], cached: Iterable[int], config=None) -> float:
    config = config or default_model_config()
    return sum(prefill_flops_saved(int(n), int(c), config) for n, c in zip(prompt_lens, cached) if c)
