"""Prefill FLOPs saved: from the model's cost formula, zero without a hit, everything with a full hit."""

import pytest

from trellis_jax.ablate.costs import default_model_config, prefill_flops_saved


def test_no_hit_saves_nothing():
    assert prefill_flops_saved(100, 0) == 0


def test_full_hit_saves_the_whole_prefill():
    config = default_model_config()
    assert prefill_flops_saved(100, 100) == config.prefill_flops(100, 0)


def test_saving_is_the_cached_tokens_work_including_their_attention():
    # Per cached token: its matmuls (layers + LM head) and its causal attention over positions 1..c
    c = default_model_config()
    cached = 10
    matmuls = c.prefill_flops(1, 0) - c.num_layers * 4 * c.q_size  # one token at context 1, minus attention
    attention = c.num_layers * 4 * c.q_size * cached * (cached + 1) // 2
    assert prefill_flops_saved(50, cached) == pytest.approx(cached * matmuls + attention)


def test_default_model_is_smollm2_135m():
    c = default_model_config()
    assert (
        c.num_layers,
        c.hidden_size,
        c.num_heads,
        c.num_kv_heads,
        c.head_dim,
        c.intermediate_size,
        c.vocab_size,
    ) == (30, 576, 9, 3, 64, 1536, 49152)


def test_more_cached_than_prompt_is_an_error():
    with pytest.raises(ValueError, match="cached"):
        prefill_flops_saved(5, 6)
