"""The Flax modules declare the params of model/params.py with their logical axes, and read a given tree as is."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

from trellis_jax.model import ModelConfig, build_step_inputs, forward, init_kv_pages, init_params, param_shapes
from trellis_jax.model.llama import LlamaModel, init_variables
from trellis_jax.model.logical_axes import PARAM_AXES, RULES, mesh_axes
from trellis_jax.model.sharding import kv_sharding, param_shardings

CONFIG = ModelConfig(
    "llama", vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8
)
BIASED_TIED = CONFIG.replace(attention_bias=True, tie_word_embeddings=True, dtype="bfloat16")


def is_box(x):
    return isinstance(x, nn.LogicallyPartitioned)


def expected_structs(config):
    dtype = jnp.dtype(config.dtype)
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s, dtype), param_shapes(config), is_leaf=lambda x: isinstance(x, tuple)
    )


def by_path(tree, is_leaf) -> dict:
    return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]}


@pytest.mark.parametrize("config", [CONFIG, BIASED_TIED], ids=["untied", "biased-tied-bf16"])
def test_init_declares_every_param_with_its_logical_axes_which_the_rules_map(config):
    boxes = by_path(init_variables(config, jax.random.key(0))["params"], is_box)
    assert boxes.keys() == by_path(param_shapes(config), lambda x: isinstance(x, tuple)).keys()
    for path, box in boxes.items():
        table = PARAM_AXES["layers"] if path.startswith("['layers']") else PARAM_AXES
        assert box.names == table[path.split("'")[-2]], path
        assert all(axis is None or axis in ("tp",) for axis in mesh_axes(box.names, RULES)), path


@pytest.mark.parametrize("config", [CONFIG, BIASED_TIED], ids=["untied", "biased-tied-bf16"])
def test_init_params_has_the_layouts_shapes_and_dtype(config):
    params = init_params(config, jax.random.key(0))
    chex.assert_trees_all_equal_shapes_and_dtypes(params, expected_structs(config))


def test_init_params_sets_norms_to_one_and_draws_the_rest_at_scale():
    params = init_params(CONFIG, jax.random.key(0), scale=0.5)
    chex.assert_trees_all_equal(params["final_norm"], jnp.ones(CONFIG.hidden_size))
    chex.assert_trees_all_equal(params["layers"]["mlp_norm"], jnp.ones((CONFIG.num_layers, CONFIG.hidden_size)))
    assert 0.45 < float(jnp.std(params["layers"]["w_gate"])) < 0.55
    assert not np.array_equal(params["layers"]["wq"][0], params["layers"]["wq"][1])  # each layer its own draw


def test_param_shardings_split_heads_and_mlp_over_tp_and_keep_the_rest_whole():
    mesh = Mesh(np.array(jax.devices()[:1]), ("tp",))
    specs = jax.tree.map(lambda s: s.spec, param_shardings(CONFIG, mesh))
    assert specs["layers"]["wq"] == PartitionSpec(None, None, "tp")  # column parallel
    assert specs["layers"]["wo"] == PartitionSpec(None, "tp", None)  # row parallel
    assert specs["layers"]["w_down"] == PartitionSpec(None, "tp", None)
    assert specs["embed"] == specs["lm_head"] == PartitionSpec(None, None)
    assert kv_sharding(mesh).spec == PartitionSpec(None, "tp", None, None, None)


def test_param_shardings_refuse_rules_that_leave_an_axis_unmapped():
    mesh = Mesh(np.array(jax.devices()[:1]), ("tp",))
    rules = tuple(rule for rule in RULES if rule[0] != "mlp")
    with pytest.raises(KeyError, match="mlp"):
        param_shardings(CONFIG, mesh, rules)


def test_the_module_applied_to_its_boxed_init_tree_matches_forward_on_the_plain_one():
    variables = init_variables(CONFIG, jax.random.key(1), scale=0.5)
    batch = build_step_inputs([[1, 2, 3], [4]], [0, 0], [[1], [2]], 4)
    boxed = LlamaModel(CONFIG).apply(variables, init_kv_pages(CONFIG, 3, 4), batch)
    plain = forward(nn.unbox(variables["params"]), init_kv_pages(CONFIG, 3, 4), batch, config=CONFIG)
    chex.assert_trees_all_equal(boxed, plain)
