"""NamedShardings for the model's params and KV pages on a mesh, from the modules' logical axes.

Contract: `abstract_params(config)` is `LlamaModel.init`'s tree as ShapeDtypeStructs, each leaf boxed in
`nn.LogicallyPartitioned` with its names from `logical_axes.PARAM_AXES` (no weights are made);
`param_shardings(config, mesh, rules=RULES)` maps those names onto `mesh` by the rules table: a tree of
`NamedSharding` shaped like model/params.py's canonical layout (before the matmul op's `prepare`);
`kv_sharding(mesh, rules=RULES)` is the sharding of `KVPages.k` and `.v` (`logical_axes.KV_AXES`).
An axis the rules do not name is a KeyError (`logical_axes.mesh_axes`), never a silent replication.
"""

from __future__ import annotations

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from trellis_jax.model.llama import LlamaModel, init_inputs
from trellis_jax.model.logical_axes import KV_AXES, RULES, mesh_axes


def abstract_params(config) -> dict:
    """The params tree as `nn.LogicallyPartitioned` ShapeDtypeStructs (traced, nothing allocated)."""
    return jax.eval_shape(LlamaModel(config).init, jax.random.key(0), *init_inputs(config))["params"]


def param_shardings(config, mesh: Mesh, rules=RULES) -> dict:
    """A NamedSharding per param of `config`'s canonical tree, on `mesh` by `rules`."""
    specs = nn.get_partition_spec(abstract_params(config))
    for spec in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec)):
        mesh_axes(tuple(spec), rules)  # KeyError naming an axis the rules leave out
    return nn.logical_to_mesh_sharding(specs, mesh, rules)


def kv_sharding(mesh: Mesh, rules=RULES) -> NamedSharding:
    """The sharding of each KV page array [L, Hkv, P, S, D] on `mesh`: split by KV head under tensor parallelism."""
    return NamedSharding(mesh, PartitionSpec(*mesh_axes(KV_AXES, rules)))
