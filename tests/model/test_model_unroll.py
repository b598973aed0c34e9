"""The layer loop unrolled by any amount (`unroll_layers`: N layers per scan iteration, or none left, a GPU speed
option) computes what the scan computes: the same logits and KV pages, on a 5-layer model so that 2 and 3 leave
a remainder iteration and 7 is past the depth."""

import jax
import numpy as np
import pytest
from model_testlib import PAGE_SIZE

from trellis_jax.model import (
    ModelConfig,
    build_step_inputs,
    init_kv_pages,
    init_params,
    jit_forward,
    sequential_page_tables,
)

PROMPT = np.random.default_rng(3).integers(3, 100, 21).tolist()
FIVE_LAYERS = ModelConfig(
    architecture="llama",
    vocab_size=101,
    hidden_size=32,
    intermediate_size=64,
    num_layers=5,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    max_position_embeddings=64,
)


def _forward(config, params, unroll_layers):
    tables = sequential_page_tables([len(PROMPT)], PAGE_SIZE)
    kv = init_kv_pages(config, 1 + len(tables[0]), PAGE_SIZE)
    batch = build_step_inputs([PROMPT], [0], tables, PAGE_SIZE)
    logits, kv = jit_forward(params, kv, batch, config=config, unroll_layers=unroll_layers)
    return np.asarray(logits), np.asarray(kv.k), np.asarray(kv.v)


@pytest.fixture(scope="module")
def five_layer_params():
    return init_params(FIVE_LAYERS, jax.random.key(2), scale=0.5)


@pytest.fixture(scope="module")
def scanned(five_layer_params):
    return _forward(FIVE_LAYERS, five_layer_params, 1)


@pytest.mark.parametrize("unroll", [2, 3, 5, 7, -1, True])
def test_unrolled_layers_match_the_scan(five_layer_params, scanned, unroll):
    unrolled = _forward(FIVE_LAYERS, five_layer_params, unroll)
    for a, b in zip(scanned, unrolled):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_the_tiny_checkpoint_unrolled_matches_its_scan(tiny_model):
    loaded = tiny_model("llama")
    scanned, unrolled = _forward(loaded.config, loaded.params, False), _forward(loaded.config, loaded.params, -1)
    for a, b in zip(scanned, unrolled):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_a_bad_unroll_value_is_refused_at_trace_time(five_layer_params):
    with pytest.raises(ValueError, match="unroll_layers"):
        _forward(FIVE_LAYERS, five_layer_params, -2)
