"""Tensor parallelism over a 1-D `jax.sharding.Mesh` (axis "tp"): Megatron's split of the model, KV by head.

Contract:
  tp = TensorParallel.create(config, size, devices=None)   ValueError for size < 1, size > devices, or
      quantized weights (split_params); size 1 is never built (the runner's one-device path is unchanged)
  tp.config         the model padded to whole KV groups per shard (== config where the heads divide)
  tp.local_config   one shard's model: heads, KV heads and the MLP width divided by size
  tp.shard_params(params, prepare) -> params with a leading device axis [size, ...], split on "tp"
  tp.init_kv(num_pages, page_size, dtype) -> KVPages [L, Hkv, P, S, D] split by KV head (axis 1)
  tp.wrap(fn) -> fn under shard_map: fn(params, kv, *replicated) -> (replicated, kv, replicated), where fn
      sees one shard's params (device axis dropped) and KV heads; everything else whole on every device
  tp.replicated     the NamedSharding of whole arrays (the step's other inputs and outputs)
The split follows model/logical_axes.py (PARAM_AXES, KV_AXES, RULES): no second table. Each shard's raw
slice is moved to its device first and then prepared there by the matmul op (`prepare`), so fused and packed
layouts are per shard (w_qkv is [q_s|k_s|v_s]) and no device ever holds another's shard or a full copy
of a split weight. Replicated weights (embedding, norms, LM head) are one copy per device.
Where the weights come from (checkpoints.load_model with tensor_parallel_size): host numpy leaves are
sliced on the host (numpy views, no copy) and each slice is put on its own device; a leaf already split
over this mesh (an orbax restore with NamedSharding) gives each device the shard it already holds.
Padding: where size does not divide the KV heads, whole dummy KV groups (a KV head and its query heads) are
appended with zero wq/wk/wv columns and zero wo rows; their queries, keys and values are zero, so their
attention output is zero and wo adds nothing: the math is exactly the unpadded model's. The MLP width is
padded the same way (zero gate/up columns: silu(0) * 0 = 0; zero w_down rows). One log line says so.
The row-parallel matmuls (wo, w_down) each leave a partial sum per shard, added by `psum` in the forward
(model.forward's `tp_axis`); the residual stream, the logits and the sampling are whole on every device.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from pallas_kernels.matmul import quantized
from trellis_jax.model.kv import KVPages
from trellis_jax.model.logical_axes import KV_AXES, PARAM_AXES, TP, mesh_axes
from trellis_jax.runner.shard_map_compat import shard_map

logger = logging.getLogger(__name__)

KV_SPEC = P(*mesh_axes(KV_AXES))  # (None, "tp", None, None, None): pages split by KV head
STACKED_SPEC = P(TP)  # params carry a leading device axis, one shard per device


@dataclasses.dataclass(frozen=True)
class TensorParallel:
    size: int
    mesh: Mesh
    config: object  # padded global ModelConfig
    local_config: object  # one shard's ModelConfig
    source_config: object  # the model as loaded (unpadded)

    @classmethod
    def create(cls, config, size: int, devices=None) -> TensorParallel:
        devices = list(jax.devices() if devices is None else devices)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"tensor_parallel_size must be a positive int, got {size!r}")
        if size > len(devices):
            raise ValueError(
                f"tensor_parallel_size={size} needs {size} devices, but only {len(devices)} "
                f"{devices[0].platform} device(s) are visible (CPU: XLA_FLAGS=--xla_force_host_platform_device_count={size})"
            )
        padded = padded_config(config, size)
        local = padded.replace(
            num_heads=padded.num_heads // size,
            num_kv_heads=padded.num_kv_heads // size,
            intermediate_size=padded.intermediate_size // size,
        )
        if padded != config:
            logger.warning("tensor parallel %d: %s", size, describe_padding(config, padded))
        mesh = Mesh(np.array(devices[:size]), (TP,))
        return cls(size, mesh, padded, local, config)

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    @property
    def kv_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, KV_SPEC)

    @property
    def params_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, STACKED_SPEC)

    # ---- weights --------------------------------------------------------------------------------
    def shard_params(self, params: dict, prepare) -> dict:
        """Raw params -> prepared per shard, stacked on a leading device axis split over the mesh.

        `prepare(shard_params, local_config) -> prepared` is the matmul op's prepare with its options bound.
        """
        params = pad_params(params, self.source_config, self.config)
        shards = []
        for index, device in self.local_devices():
            local = jax.device_put(split_params(params, index, self.size, device), device)
            shards.append(prepare(local, self.local_config))
        del params
        return jax.tree.map(self._stack, *shards)

    def local_devices(self) -> list[tuple[int, jax.Device]]:
        """(shard index, device) of this process's devices (all of them, one process)."""
        return [(i, d) for i, d in enumerate(self.mesh.devices.flat) if d.process_index == jax.process_index()]

    def _stack(self, *per_device) -> jax.Array:
        first = per_device[0]
        arrays = [jnp.expand_dims(a, 0) for a in per_device]  # each stays on its own device
        shape = (self.size, *first.shape)
        return jax.make_array_from_single_device_arrays(shape, self.params_sharding, arrays)

    # ---- KV pages -------------------------------------------------------------------------------
    def init_kv(self, num_pages: int, page_size: int, dtype) -> KVPages:
        """Zeroed KV pages, each device holding its KV heads' slice of every page."""
        c = self.config
        shape = (c.num_layers, c.num_kv_heads, num_pages, page_size, c.head_dim)
        local = (c.num_layers, c.num_kv_heads // self.size, num_pages, page_size, c.head_dim)

        def zeros():
            blocks = [jax.device_put(np.zeros(local, jnp.dtype(dtype)), d) for _, d in self.local_devices()]
            return jax.make_array_from_single_device_arrays(shape, self.kv_sharding, blocks)

        return KVPages(zeros(), zeros())

    # ---- programs -------------------------------------------------------------------------------
    def wrap(self, fn):
        """fn(params, kv, *rest) -> (out, kv, fed) run per shard; see the module docstring."""

        def per_shard(params, kv, *rest):
            local = jax.tree.map(lambda a: a.reshape(a.shape[1:]), params)  # drop the device axis (a bitcast)
            return fn(local, kv, *rest)

        def sharded(params, kv, *rest):
            return shard_map(
                per_shard,
                mesh=self.mesh,
                in_specs=(STACKED_SPEC, KV_SPEC, *([P()] * len(rest))),
                out_specs=(P(), KV_SPEC, P()),
            )(params, kv, *rest)

        return sharded

    def wrap_kv_only(self, fn):
        """fn(kv, *rest) -> kv run per shard (the page copier): every shard copies its heads' slices."""

        def sharded(kv, *rest):
            return shard_map(fn, mesh=self.mesh, in_specs=(KV_SPEC, *([P()] * len(rest))), out_specs=KV_SPEC)(kv, *rest)

        return sharded

    def describe_kv(self, num_pages: int, page_size: int, dtype) -> str:
        per_device = num_pages * page_size * self.local_config.kv_bytes_per_token(dtype)
        whole = num_pages * page_size * self.source_config.kv_bytes_per_token(dtype)
        return (
            f"tensor parallel {self.size}: KV {per_device / 2**20:.1f} MiB per device "
            f"({per_device / whole:.3f} of the unpadded model's {whole / 2**20:.1f} MiB)"
        )


def padded_config(config, size: int):
    """config with whole dummy KV groups (and MLP columns) added until `size` divides them."""
    kv_heads = -(-config.num_kv_heads // size) * size
    return config.replace(
        num_kv_heads=kv_heads,
        num_heads=kv_heads * config.group_size,
        intermediate_size=-(-config.intermediate_size // size) * size,
    )


def describe_padding(config, padded) -> str:
    """One line: what was padded and what it costs."""
    parts = []
    if padded.num_kv_heads != config.num_kv_heads:
        parts.append(
            f"KV heads {config.num_kv_heads}->{padded.num_kv_heads} (query heads {config.num_heads}->"
            f"{padded.num_heads}): {100 * (padded.num_kv_heads / config.num_kv_heads - 1):.0f}% more attention "
            "compute and KV memory"
        )
    if padded.intermediate_size != config.intermediate_size:
        parts.append(f"MLP width {config.intermediate_size}->{padded.intermediate_size}")
    return "padded with zero weights (exact): " + "; ".join(parts)


def _logical_sizes(config) -> dict[str, int]:
    """The size of each split logical axis (a flat projection axis counts heads x head_dim)."""
    return {"heads": config.q_size, "kv_heads": config.kv_size, "mlp": config.intermediate_size}


def _axes(path) -> tuple[str, ...]:
    node = PARAM_AXES
    for key in path:
        node = node[key.key]
    return node


def pad_params(params: dict, config, padded) -> dict:
    """Zero columns/rows appended along every split logical axis up to the padded config's sizes."""
    before, after = _logical_sizes(config), _logical_sizes(padded)
    if before == after:
        return params

    def pad(path, leaf):
        widths = [(0, after[name] - before[name]) if name in before else (0, 0) for name in _axes(path)]
        if not any(w for _, w in widths):
            return leaf
        return np.pad(leaf, widths) if isinstance(leaf, np.ndarray) else jnp.pad(leaf, widths)  # host stays host

    return jax.tree_util.tree_map_with_path(pad, params)


def split_params(params: dict, index: int, size: int, device=None) -> dict:
    """Shard `index` of `size`: each leaf sliced along the axis the rules map to "tp" (others whole).

    A numpy leaf is sliced on the host (a view); a leaf spread over several devices (restored with a
    NamedSharding) gives `device`'s own shard, which must be exactly that slice; one on a single device is
    sliced there."""

    def split(path, leaf):
        if quantized.is_quantized(leaf):
            raise ValueError("tensor parallelism needs float weights: load a quantized GGUF with weight_format='float'")
        axes = mesh_axes(_axes(path))
        axis = axes.index(TP) if TP in axes else None
        width = None if axis is None else leaf.shape[axis] // size
        if isinstance(leaf, jax.Array) and device is not None and len(leaf.sharding.device_set) > 1:
            return _own_shard(leaf, device, axis, width, index)
        if axis is None:
            return leaf
        if isinstance(leaf, np.ndarray):
            return leaf[(slice(None),) * axis + (slice(index * width, (index + 1) * width),)]
        return jax.lax.slice_in_dim(leaf, index * width, (index + 1) * width, axis=axis)

    return jax.tree_util.tree_map_with_path(split, params, is_leaf=quantized.is_quantized)


def _own_shard(leaf: jax.Array, device, axis, width, index) -> jax.Array:
    """The block of `leaf` that `device` holds, checked to be shard `index` (or the whole, unsplit)."""
    for shard in leaf.addressable_shards:
        if shard.device == device:
            start = 0 if axis is None else index * width
            expected = leaf.shape if axis is None else leaf.shape[:axis] + (width,) + leaf.shape[axis + 1 :]
            found = 0 if axis is None else (shard.index[axis].start or 0)
            if shard.data.shape != expected or found != start:
                raise ValueError(f"a weight is split as {leaf.sharding}, not as the rules split it over this mesh")
            return shard.data
    raise ValueError(f"a weight is placed on {leaf.sharding.device_set}, which does not hold {device}")
