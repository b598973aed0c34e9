"""The parameter pytree of a Llama-family model: its layout, a shape check, and random initialisation.

Contract: params is a nested dict of arrays in the config's dtype, matmul weights stored [in, out] so the
forward computes x @ W, per-layer weights stacked on a leading num_layers axis (the forward scans them):
  embed [V, H] (a loader may keep a quantized one packed: `pallas_kernels.matmul.quantized`, stored as
  the tied head's [H, V], so the lookup gathers its columns); final_norm [H]; lm_head [H, V] (with tied embeddings: absent, or a materialised copy of
  embed.T that the matmul op's prepare adds for speed)
  layers: attn_norm [L, H], wq [L, H, Hq*D], wk/wv [L, H, Hkv*D], wo [L, Hq*D, H],
          bq [L, Hq*D], bk/bv [L, Hkv*D] (only with attention_bias),
          mlp_norm [L, H], w_gate/w_up [L, H, I], w_down [L, I, H]
  A runner hands the tree to the matmul op's `pallas_kernels.matmul.prepare`, which may fuse the
  projections that read the same input (w_qkv [L, H, Hq*D + 2*Hkv*D] instead of wq/wk/wv, w_gate_up
  [L, H, 2*I] instead of w_gate/w_up), materialise a tied head, and pack the matrices for its backends
  (pallas_kernels/matmul/layouts.py); `check_params` accepts those layouts.
Loaders build this from checkpoints and call `check_params`; nothing else knows checkpoint names.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from pallas_kernels.matmul import quantized
from pallas_kernels.matmul.layouts import FUSED, packed_shapes
from trellis_jax.model.llama import init_variables


def streamed_weight_bytes(params: dict) -> int:
    """Bytes of weights one step reads in full, as the params hold them (packed weights count their codes,
    scales and mins): every layer matrix and norm and the LM head (a separate `lm_head`, or the tied
    embedding), but not the embedding table beside a separate head (a step reads only its rows)."""
    total = sum(int(leaf.nbytes) for leaf in jax.tree.leaves(params))
    if "lm_head" in params:
        total -= sum(int(leaf.nbytes) for leaf in jax.tree.leaves(params["embed"]))
    return total


def param_shapes(config) -> dict:
    """The expected pytree of shapes (tuples) for `config`."""
    c = config
    L, H, I = c.num_layers, c.hidden_size, c.intermediate_size
    layers = {
        "attn_norm": (L, H),
        "wq": (L, H, c.q_size),
        "wk": (L, H, c.kv_size),
        "wv": (L, H, c.kv_size),
        "wo": (L, c.q_size, H),
        "mlp_norm": (L, H),
        "w_gate": (L, H, I),
        "w_up": (L, H, I),
        "w_down": (L, I, H),
    }
    if c.attention_bias:
        layers.update(bq=(L, c.q_size), bk=(L, c.kv_size), bv=(L, c.kv_size))
    shapes = {"embed": (c.vocab_size, H), "final_norm": (H,), "layers": layers}
    if not c.tie_word_embeddings:
        shapes["lm_head"] = (H, c.vocab_size)
    return shapes


def check_params(params: dict, config, source: str = "params") -> None:
    """Raise ValueError naming every missing, unexpected or mis-shaped entry (either projection layout)."""
    problems = []
    expected = param_shapes(config)
    if config.tie_word_embeddings and isinstance(params, dict) and "lm_head" in params:
        expected["lm_head"] = (config.hidden_size, config.vocab_size)  # a materialised embed.T
    if isinstance(params, dict) and quantized.is_quantized(params.get("embed")):
        expected["embed"] = expected["embed"][::-1]  # kept packed as its tied head's [H, V] weight
    layers = params.get("layers") if isinstance(params, dict) else None
    for fused, parts in FUSED.items():
        if isinstance(layers, dict) and fused in layers:
            shapes = [expected["layers"].pop(part) for part in parts]
            expected["layers"][fused] = shapes[0][:2] + (sum(shape[2] for shape in shapes),)
    _compare(params, expected, "", problems)
    if problems:
        raise ValueError(f"{source}: parameters do not match the config: " + "; ".join(problems))


def _compare(actual, expected, prefix, problems):
    if not isinstance(actual, dict):
        problems.append(f"{prefix or 'root'} should be a dict")
        return
    for key in sorted(set(expected) | set(actual)):
        name = prefix + key
        if key not in actual:
            problems.append(f"missing {name}")
        elif key not in expected:
            problems.append(f"unexpected {name}")
        elif isinstance(expected[key], dict):
            _compare(actual[key], expected[key], name + ".", problems)
        elif tuple(actual[key].shape) not in (expected[key], *packed_shapes(expected[key])):
            problems.append(f"{name} has shape {tuple(actual[key].shape)}, expected {expected[key]}")


def init_params(config, key: jax.Array, scale: float = 0.02) -> dict:
    """Random params (normal * scale, norms at 1, the config's dtype) for tests and benchmarks without a
    checkpoint: the model's own init (model/llama.py), its logical-axis boxes dropped."""
    return nn.unbox(init_variables(config, key, scale)["params"])
