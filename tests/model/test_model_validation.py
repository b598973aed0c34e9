"""The forward rejects inputs that do not fit the config at trace time, naming what is wrong."""

import jax
import pytest

from trellis_jax.model import (
    ModelConfig,
    build_step_inputs,
    check_params,
    forward,
    init_kv_pages,
    init_params,
    sequential_page_tables,
)

CONFIG = ModelConfig(
    "llama", vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8
)


def batch():
    return build_step_inputs([[1, 2, 3]], [0], sequential_page_tables([3], 4), 4)


def test_params_with_a_missing_or_misshaped_entry_are_named():
    params = init_params(CONFIG, jax.random.key(0))
    del params["layers"]["w_up"]
    params["embed"] = params["embed"][:10]
    with pytest.raises(ValueError) as error:
        check_params(params, CONFIG)
    assert "missing layers.w_up" in str(error.value)
    assert "embed has shape (10, 32), expected (64, 32)" in str(error.value)


def test_kv_pages_of_another_config_are_rejected():
    params = init_params(CONFIG, jax.random.key(0))
    kv = init_kv_pages(CONFIG.replace(num_kv_heads=4), 4, 4)
    with pytest.raises(ValueError, match=r"KV pages must be \[L=2, Hkv=2, P, S, D=8\]"):
        forward(params, kv, batch(), config=CONFIG)


def test_builder_rejects_a_sequence_longer_than_its_pages():
    with pytest.raises(ValueError, match="need more than its 1 pages"):
        build_step_inputs([[1, 2, 3, 4, 5]], [0], [[1]], 4)


def test_step_inputs_of_another_dtype_are_rejected():
    params = init_params(CONFIG, jax.random.key(0))
    bad = batch()._replace(positions=batch().positions.astype("float32"))
    with pytest.raises(ValueError, match="step inputs must be int32") as error:
        forward(params, init_kv_pages(CONFIG, 4, 4), bad, config=CONFIG)
    assert "float32" in str(error.value)  # chex's detail names the offending dtype


def test_step_inputs_whose_token_rows_disagree_are_rejected():
    params = init_params(CONFIG, jax.random.key(0))
    bad = batch()._replace(slot_mapping=batch().slot_mapping[:2])
    with pytest.raises(ValueError, match=r"token_ids/positions/slot_mapping \[T\].*'slot_mapping': \(2,\)"):
        forward(params, init_kv_pages(CONFIG, 4, 4), bad, config=CONFIG)


def test_kv_pages_whose_k_and_v_differ_in_dtype_are_rejected():
    params = init_params(CONFIG, jax.random.key(0))
    kv = init_kv_pages(CONFIG, 4, 4)
    with pytest.raises(ValueError, match="KV pages must be"):
        forward(params, kv._replace(v=kv.v.astype("bfloat16")), batch(), config=CONFIG)
