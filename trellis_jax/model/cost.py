"""Cost model of a Llama-family decoder: parameter count, FLOPs, KV bytes and weight bytes.

Contract: pure functions of a ModelConfig (duck-typed here to avoid an import cycle). FLOPs count a
multiply-add as 2 and include the LM head but not the embedding lookup (a gather). Attention FLOPs are the
QK^T and PV products over the attended context; a prefix already in the KV cache costs only its share of
attention. The server, benchmarks and cache-aware scheduling use these numbers, so keep them exact.
"""

from __future__ import annotations

BYTES_PER_ELEMENT = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}


def _layer_matmul_params(c) -> int:
    attn = c.hidden_size * (c.q_size + 2 * c.kv_size) + c.q_size * c.hidden_size
    mlp = 3 * c.hidden_size * c.intermediate_size
    return attn + mlp


def num_params(c) -> int:
    """All parameters, counting a tied embedding once."""
    per_layer = _layer_matmul_params(c) + 2 * c.hidden_size
    if c.attention_bias:
        per_layer += c.q_size + 2 * c.kv_size
    embed = c.vocab_size * c.hidden_size
    head = 0 if c.tie_word_embeddings else embed
    return c.num_layers * per_layer + embed + head + c.hidden_size


def flops_per_token(c, context_len: int) -> float:
    """Forward FLOPs of one token attending to `context_len` tokens (itself included)."""
    if context_len < 1:
        raise ValueError(f"context_len must be >= 1, got {context_len}")
    matmuls = 2 * (c.num_layers * _layer_matmul_params(c) + c.hidden_size * c.vocab_size)
    attention = c.num_layers * 4 * c.q_size * _attended(c, context_len)
    return float(matmuls + attention)


def prefill_flops(c, num_tokens: int, cached_tokens: int = 0) -> float:
    """FLOPs to run `num_tokens` new tokens after `cached_tokens` cached ones (logits for every token)."""
    if num_tokens < 0 or cached_tokens < 0:
        raise ValueError(f"token counts must be >= 0, got {num_tokens}, {cached_tokens}")
    matmuls = 2 * (c.num_layers * _layer_matmul_params(c) + c.hidden_size * c.vocab_size) * num_tokens
    attended = _attended_sum(c, cached_tokens + 1, cached_tokens + num_tokens)
    return float(matmuls + c.num_layers * 4 * c.q_size * attended)


def _attended(c, context_len: int) -> int:
    return min(context_len, c.sliding_window) if c.sliding_window else context_len


def _attended_sum(c, first: int, last: int) -> int:
    """sum(_attended(c, n) for n in first..last), in closed form (prompts can be long)."""
    window = c.sliding_window or last
    growing_last = min(last, window)  # contexts still inside the window attend to all of themselves
    growing = (first + growing_last) * (growing_last - first + 1) // 2 if growing_last >= first else 0
    return growing + window * max(0, last - max(first - 1, window))


def kv_bytes_per_token(c, dtype: str) -> int:
    """Bytes of K and V for one token across all layers."""
    return 2 * c.num_layers * c.kv_size * _element_bytes(dtype)


def weight_bytes(c, dtype: str) -> int:
    return num_params(c) * _element_bytes(dtype)


def _element_bytes(dtype: str) -> int:
    if dtype not in BYTES_PER_ELEMENT:
        raise ValueError(f"unknown dtype {dtype!r}; known: {sorted(BYTES_PER_ELEMENT)}")
    return BYTES_PER_ELEMENT[dtype]
