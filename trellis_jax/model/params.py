"""The parameter pytree of a Llama-family model: its layout, a shape check, and random initialisation.

Contract: params is a nested dict of arrays in the config's dtype, matmul weights stored [in, out] so the
forward computes x @ W, per-layer weights stacked on a leading num_layers axis (the forward scans them):
  embed [V, H]; final_norm [H]; lm_head [H, V] (with tied embeddings: absent, or a materialised copy of
  embed.T that a runner adds for speed, see `with_materialised_head`)
  layers: attn_norm [L, H], wq [L, H, Hq*D], wk/wv [L, H, Hkv*D], wo [L, Hq*D, H],
          bq [L, Hq*D], bk/bv [L, Hkv*D] (only with attention_bias),
          mlp_norm [L, H], w_gate/w_up [L, H, I], w_down [L, I, H]
  A runner may fuse the projections that read the same input (`with_fused_projections`): w_qkv
  [L, H, Hq*D + 2*Hkv*D] instead of wq/wk/wv and w_gate_up [L, H, 2*I] instead of w_gate/w_up.
  A runner may also pack the matmul weights for the native CPU kernels (`with_packed_matmuls`): every
  [..., K, N] matrix becomes strips of W columns, each stored whole: [..., N/W, ceil(K/2), W, 2] row pairs
  for a bfloat16 model (pallas_kernels.layer_matmul_bf16.pack_pairs), [..., N/W, K, W] for float32
  (pallas_kernels.layer_matmul.pack_strips).
Loaders build this from checkpoints and call `check_params`; nothing else knows checkpoint names.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


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


FUSED = {"w_qkv": ("wq", "wk", "wv"), "w_gate_up": ("w_gate", "w_up")}


def check_params(params: dict, config, source: str = "params") -> None:
    """Raise ValueError naming every missing, unexpected or mis-shaped entry (either projection layout)."""
    problems = []
    expected = param_shapes(config)
    if config.tie_word_embeddings and isinstance(params, dict) and "lm_head" in params:
        expected["lm_head"] = (config.hidden_size, config.vocab_size)  # a materialised embed.T
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
        elif tuple(actual[key].shape) not in (expected[key], *_packed_shapes(expected[key])):
            problems.append(f"{name} has shape {tuple(actual[key].shape)}, expected {expected[key]}")


def _packed_shapes(shape: tuple) -> tuple:
    """The shapes `with_packed_matmuls` may give a matrix of `shape` (none for vectors and norms)."""
    if len(shape) < 2:
        return ()
    from pallas_kernels.layer_matmul import strips_shape
    from pallas_kernels.layer_matmul_bf16 import packed_shape

    return packed_shape(shape), strips_shape(shape)


def init_params(config, key: jax.Array, scale: float = 0.02) -> dict:
    """Random params (normal * scale, norms at 1) for tests and benchmarks without a checkpoint."""
    shapes = param_shapes(config)
    leaves, treedef = jax.tree_util.tree_flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
    paths = [
        jax.tree_util.keystr(p)
        for p, _ in jax.tree_util.tree_flatten_with_path(shapes, is_leaf=lambda x: isinstance(x, tuple))[0]
    ]
    keys = jax.random.split(key, len(leaves))
    dtype = jnp.dtype(config.dtype)
    arrays = [
        jnp.ones(shape, dtype) if "norm" in path else (scale * jax.random.normal(k, shape, jnp.float32)).astype(dtype)
        for path, shape, k in zip(paths, leaves, keys)
    ]
    return jax.tree_util.tree_unflatten(treedef, arrays)


def with_fused_projections(params: dict) -> dict:
    """params with wq/wk/wv concatenated into w_qkv and w_gate/w_up into w_gate_up (new arrays; the
    separate ones are dropped from the returned tree).

    A small-batch step then streams the weights that read the same input in one matmul instead of three
    or two: fewer kernel launches, and no small single-threaded matrix (docs/benchmarks/runner-raw-speed.md,
    "Fused projections and padding rows"). Same memory once the caller lets the separate arrays go.
    """
    layers = dict(params["layers"])
    for fused, parts in FUSED.items():
        if fused not in layers:
            layers[fused] = jnp.concatenate([layers.pop(part) for part in parts], axis=-1)
    return {**params, "layers": layers}


def packed_matrix_names(params: dict) -> list[str]:
    """The layer matrices (3-d, [L, in, out]) that `with_packed_matmuls` packs, in params order."""
    return [name for name, value in params["layers"].items() if value.ndim == 3]


def with_packed_matmuls(params: dict) -> dict:
    """params with every layer matrix and a present lm_head packed for the native CPU matmuls: bfloat16 as
    row pairs in strips (pallas_kernels.layer_matmul_bf16.pack_pairs), float32 as strips
    (pallas_kernels.layer_matmul.pack_strips); norms, biases and the embedding unchanged.

    Same memory as the matrices they replace. bfloat16 (CPUs with AVX512_BF16): the pairs are what
    vdpbf16ps reads, twice the multiply-adds per instruction of float32. Both: a strip stored whole makes
    the kernel's walk down K sequential, which a weight-bound decode step needs.
    """
    from pallas_kernels.layer_matmul import pack_strips
    from pallas_kernels.layer_matmul_bf16 import pack_pairs

    pack = pack_pairs if params["embed"].dtype == jnp.bfloat16 else pack_strips
    layers = dict(params["layers"])
    for name in packed_matrix_names(params):
        layers[name] = pack(layers[name])
    packed = {**params, "layers": layers}
    if "lm_head" in params:
        packed["lm_head"] = pack(params["lm_head"])
    return packed


def with_materialised_head(params: dict, config) -> dict:
    """Tied embeddings: params plus lm_head = a contiguous copy of embed.T, else params unchanged.

    The LM head then streams [H, V] rows like every other matmul instead of XLA:CPU transposing the whole
    embedding inside each step (docs/benchmarks/runner-raw-speed.md, "Native decode kernels"). Costs one
    more embedding in memory (113 MB for SmolLM2-135M in float32).
    """
    if not config.tie_word_embeddings or "lm_head" in params:
        return params
    return {**params, "lm_head": jnp.transpose(params["embed"])}  # a new, contiguous array
