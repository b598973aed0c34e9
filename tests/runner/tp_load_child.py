"""The tensor-parallel loading tests' child: load checkpoints for TP `size`, watch what lands on each device.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/runner/tp_load_child.py SIZE CASES

CASES: a JSON object, name -> [MODEL, FORMAT], run one after another in this one process (one start, one jax
import). MODEL: a Hugging Face directory ("" for the default GGUF model). FORMAT "direct" loads it as it is;
"orbax" first saves it with save_orbax (loaded at TP 1) and loads that directory. Each case loads the model with
`load_model(..., tensor_parallel_size=SIZE)` while every `jax.device_put` and `jnp.asarray` is recorded,
builds a TP-`SIZE` engine on it, greedy-generates tp_child.PROMPTS, and compares with a TP-1 engine on the
plain load. One JSON line, name -> {"error": the case's traceback} or {"result": the leaf kinds the loader
returned, the largest share of a split weight one device holds in them, how many whole split weights each
device got (must be 0), bytes placed per device, the process's peak RSS so far, and the tokens of both runs}.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import traceback


def split_weight_shapes(config) -> dict:
    """name -> full shape of every weight the rules split over "tp"."""
    from trellis_jax.model import param_shapes
    from trellis_jax.model.logical_axes import PARAM_AXES, TP, mesh_axes

    shapes = param_shapes(config)
    found = {k: v for k, v in shapes.items() if k != "layers" and TP in mesh_axes(PARAM_AXES[k])}
    for key, shape in shapes["layers"].items():
        if TP in mesh_axes(PARAM_AXES["layers"][key]):
            found[key] = shape
    return found


class Recorder:
    """Wraps jax.device_put and jnp.asarray: per device, the bytes placed and each named block's shape
    (a params tree put whole names its leaves: the runner puts each shard's tree onto its device)."""

    def __init__(self):
        self.bytes, self.named = {}, {}

    def reset(self):
        """Forget what was recorded: the next case starts counting from nothing."""
        self.bytes, self.named = {}, {}

    def note(self, array):
        import jax

        for path, leaf in jax.tree_util.tree_leaves_with_path(array):
            if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer):
                name = getattr(path[-1], "key", None) if path else None
                for shard in leaf.addressable_shards:
                    key = str(shard.device)
                    self.bytes[key] = self.bytes.get(key, 0) + int(shard.data.nbytes)
                    if name is not None:
                        self.named.setdefault(key, []).append((name, tuple(shard.data.shape)))
        return array

    def install(self):
        import jax
        import jax.numpy as jnp

        put, asarray = jax.device_put, jnp.asarray
        jax.device_put = lambda *a, **k: self.note(put(*a, **k))
        jnp.asarray = lambda *a, **k: self.note(asarray(*a, **k))


def full_copies(recorder, config, size) -> dict:
    """Per device: the split weights (by name) placed there whole; and how many split weights were placed.
    Whole means the padded model's shape (runner/tensor_parallel.py pads, then splits): with padding, one
    shard of the padded weight may have the unpadded weight's shape."""
    from trellis_jax.runner.tensor_parallel import padded_config

    split = split_weight_shapes(padded_config(config, size))
    found = {}
    for device, placed in recorder.named.items():
        whole = sorted({name for name, shape in placed if name in split and shape == tuple(split[name])})
        found[device] = {"whole": whole, "split_seen": sum(name in split for name, _ in placed)}
    return found


def loaded_split_share(params, config) -> float:
    """The largest share of a split weight's elements that any one device holds in what the loader returned
    (0 for host numpy: nothing on a device)."""
    import jax

    split = split_weight_shapes(config)
    share = 0.0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if path[-1].key in split and isinstance(leaf, jax.Array):
            share = max(share, max(s.data.size / leaf.size for s in leaf.addressable_shards))
    return share


def leaf_kinds(params) -> list[str]:
    import jax
    import numpy as np

    kinds = set()
    for leaf in jax.tree.leaves(params):
        if isinstance(leaf, np.ndarray):
            kinds.add("numpy")
        else:
            kinds.add(f"jax:{len(leaf.sharding.device_set)}")
    return sorted(kinds)


def tokens(loaded, size) -> list:
    from tp_child import PROMPTS, make_llm

    from trellis_jax.engine.api import SamplingParams

    outs = make_llm(loaded, size).generate(PROMPTS, SamplingParams(temperature=0, max_tokens=8))
    return [out.outputs[0].token_ids for out in outs]


def run_case(recorder, model, fmt, size):
    from trellis_jax.checkpoints import load_model
    from trellis_jax.checkpoints.orbax_io import save_orbax

    with tempfile.TemporaryDirectory() as tmp:
        if fmt == "orbax":
            model = save_orbax(load_model(model, dtype="float32"), f"{tmp}/orbax")
        recorder.reset()
        loaded = load_model(model, dtype="float32", tensor_parallel_size=size)
        kinds = leaf_kinds(loaded.params)
        share = loaded_split_share(loaded.params, loaded.config)
        split = tokens(loaded, size)  # builds the TP engine: the shards are placed here
        worst = full_copies(recorder, loaded.config, size)
        placed = dict(recorder.bytes)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        whole = tokens(load_model(model, dtype="float32"), 1)
    return {
        "kinds": kinds,
        "loaded_split_share": share,
        "full_copy": worst,
        "placed_bytes": placed,
        "peak_rss": rss,
        "tokens": split,
        "tp1_tokens": whole,
    }


def main(size, cases):
    """name -> [MODEL, FORMAT] -> name -> {"result": ...} or {"error": ...} (the cases after a failure still run)."""
    recorder = Recorder()
    recorder.install()
    found = {}
    for name, (model, fmt) in cases.items():
        try:
            found[name] = {"result": run_case(recorder, model or None, fmt, size)}
        except Exception:
            found[name] = {"error": traceback.format_exc()}
    return found


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), json.loads(sys.argv[2]))))
