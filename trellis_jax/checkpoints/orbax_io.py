"""Converted checkpoints with orbax-checkpoint: save a LoadedModel once, restore it fast later.

Layout of a saved directory:
  trellis_model.json   {"format": FORMAT, "config": ModelConfig fields, "source": original source}
  params/              the params pytree (orbax StandardCheckpointer), in the config's dtype
  tokenizer/           tokenizer.json + tokenizer_config.json (+ generation_config.json), readable by
                       Tokenizer.from_hf_dir; absent for weights-only models
Restore builds the target tree from the config (shapes, dtypes, this process's first device), so a
checkpoint written on CPU restores on GPU. With tensor_parallel_size N > 1 the target is a NamedSharding
over the first N devices (mesh axis "tp", split per model/logical_axes.py): orbax reads each device's slice
straight onto it, no device gets a whole split weight. Where N does not divide the KV heads or the MLP width
the runner pads the weights first, so the restore goes to host numpy instead and the runner splits there.
Errors are CheckpointError naming the directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING

import jax

from trellis_jax.checkpoints.errors import CheckpointError

if TYPE_CHECKING:
    from trellis_jax.model import ModelConfig
from trellis_jax.checkpoints.hf_loader import read_json
from trellis_jax.checkpoints.loaded import LoadedModel

FORMAT = "trellis-orbax-v1"
MARKER = "trellis_model.json"


def is_orbax_dir(path) -> bool:
    return os.path.isfile(os.path.join(path, MARKER))


def save_orbax(model: LoadedModel, directory, *, overwrite: bool = False) -> str:
    """Write `model` under `directory` (created). Returns the absolute directory."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(directory)
    if os.path.exists(directory) and os.listdir(directory) and not overwrite:
        raise CheckpointError(directory, "exists and is not empty (pass overwrite=True to replace it)")
    os.makedirs(directory, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(directory, "params"), model.params, force=overwrite)
    checkpointer.wait_until_finished()
    if model.tokenizer is not None:
        _save_tokenizer(model.tokenizer, os.path.join(directory, "tokenizer"))
    meta = {"format": FORMAT, "config": _config_to_dict(model.config), "source": model.source}
    with open(os.path.join(directory, MARKER), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)  # written last: its presence means the save completed
    return directory


def load_orbax(directory, dtype: str | None = None, *, tensor_parallel_size: int = 1) -> LoadedModel:
    """Restore a directory written by `save_orbax`; `dtype` casts if it differs from the saved one;
    `tensor_parallel_size` > 1: split onto the first N devices, or host numpy (see the module docstring)."""
    import orbax.checkpoint as ocp

    from trellis_jax.model import param_shapes

    meta = read_json(os.path.join(directory, MARKER))
    if meta.get("format") != FORMAT:
        raise CheckpointError(directory, f"unknown checkpoint format {meta.get('format')!r}, expected {FORMAT!r}")
    config = _config_from_dict(meta["config"], os.path.join(directory, MARKER))
    shapes = param_shapes(config)
    sharding_of = _restore_shardings(config, shapes, tensor_parallel_size)
    path = os.path.join(os.path.abspath(directory), "params")
    try:
        if sharding_of is None:  # host numpy: the runner pads, then splits
            params = _restore_numpy(ocp, path, config, shapes)
        else:
            target = jax.tree.map(
                lambda shape, sharding: jax.ShapeDtypeStruct(shape, config.dtype, sharding=sharding),
                shapes,
                sharding_of,
                is_leaf=lambda x: isinstance(x, tuple),
            )
            params = ocp.StandardCheckpointer().restore(path, target)
    except Exception as exc:
        raise CheckpointError(os.path.join(directory, "params"), f"cannot restore params: {exc}") from exc
    if dtype is not None and dtype != config.dtype:
        config = config.replace(dtype=dtype)
        params = jax.tree.map(lambda x: x.astype(dtype), params)
    tokenizer_dir = os.path.join(directory, "tokenizer")
    tokenizer = None
    if os.path.isdir(tokenizer_dir):
        from trellis_jax.tokenizer import Tokenizer

        tokenizer = Tokenizer.from_hf_dir(tokenizer_dir)
    return LoadedModel(config, params, tokenizer, os.path.abspath(directory))


def _restore_shardings(config, shapes, size: int):
    """Each leaf's sharding: one device (size 1), split on "tp" per the rules (size N), None: host numpy."""
    if size <= 1:
        one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return jax.tree.map(lambda _: one, shapes, is_leaf=lambda x: isinstance(x, tuple))
    if config.num_kv_heads % size or config.intermediate_size % size or size > len(jax.devices()):
        return None  # padded first (runner/tensor_parallel.py); a bad size is the runner's clear error
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from trellis_jax.model.logical_axes import PARAM_AXES, TP, mesh_axes

    mesh = Mesh(jax.devices()[:size], (TP,))  # the same devices, in order, as TensorParallel.create's mesh

    def sharding(path, _shape):
        axes = PARAM_AXES
        for key in path:
            axes = axes[key.key]
        return NamedSharding(mesh, PartitionSpec(*mesh_axes(axes)))

    return jax.tree_util.tree_map_with_path(sharding, shapes, is_leaf=lambda x: isinstance(x, tuple))


def _restore_numpy(ocp, path, config, shapes) -> dict:
    """The params as host numpy arrays (orbax's restore_type), never placed on a device."""
    import numpy as np

    args = jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray, dtype=config.dtype),
        shapes,
        is_leaf=lambda x: isinstance(x, tuple),
    )
    return ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(restore_args=args))


def _config_to_dict(config) -> dict:
    return dataclasses.asdict(config)


def _config_from_dict(fields: dict, path) -> ModelConfig:
    from trellis_jax.model import ModelConfig, RopeScaling

    fields = dict(fields)
    scaling = fields.get("rope_scaling")
    try:
        if scaling is not None:
            factors = scaling.get("freq_factors")
            fields["rope_scaling"] = RopeScaling(**{**scaling, "freq_factors": tuple(factors) if factors else None})
        return ModelConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(path, f"bad model config: {exc}") from exc


def _save_tokenizer(tokenizer, directory) -> None:
    """Write the tokenizer as a Hugging Face tokenizer directory (what Tokenizer.from_hf_dir reads)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(tokenizer.hf_tokenizer.to_str())
    config = {"bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token, "add_bos_token": tokenizer.add_bos}
    if tokenizer.chat_template is not None:
        config["chat_template"] = tokenizer.chat_template.source
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=1)
    with open(os.path.join(directory, "generation_config.json"), "w", encoding="utf-8") as f:
        json.dump({"eos_token_id": list(tokenizer.eos_token_ids)}, f)
