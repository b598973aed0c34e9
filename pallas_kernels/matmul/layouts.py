"""Weight preparation for the matmul op: the layouts its backends read, applied to the model's param tree.

Contract: functions of the param tree (trellis_jax/model/params.py documents it: `embed`, optional
`lm_head`, `layers` with [L, K, N] matrices) that return a new tree and leave their input untouched:
  `with_materialised_head(params, config)`: tied embeddings get lm_head = a contiguous copy of embed.T.
  `with_fused_projections(params)`: wq/wk/wv -> w_qkv and w_gate/w_up -> w_gate_up (`FUSED`).
  `with_packed_matmuls(params)`: every layer matrix and a present lm_head packed for the native CPU
  kernels: bfloat16 as row pairs (native_bf16.pack_pairs), float32 as strips (native_f32.pack_strips).
`packed_shapes(shape)`: the shapes `with_packed_matmuls` may give a matrix of `shape`.
Which of these a model gets is the op's api's choice (`api.prepare`).
"""

from __future__ import annotations

import jax.numpy as jnp

from pallas_kernels.matmul import native_bf16, native_f32, quantized

FUSED = {"w_qkv": ("wq", "wk", "wv"), "w_gate_up": ("w_gate", "w_up")}


def with_fused_projections(params: dict) -> dict:
    """params with wq/wk/wv concatenated into w_qkv and w_gate/w_up into w_gate_up (new arrays; the
    separate ones are dropped from the returned tree).

    A small-batch step then streams the weights that read the same input in one matmul instead of three
    or two: fewer kernel launches, and no small single-threaded matrix (docs/benchmarks/runner-raw-speed.md,
    "Fused projections and padding rows"). Same memory once the caller lets the separate arrays go.
    """
    layers = dict(params["layers"])
    for fused, parts in FUSED.items():
        if fused in layers:
            continue
        weights = [layers[part] for part in parts]
        packed = [quantized.is_quantized(w) for w in weights]
        one_format = all(packed) and len({w.fmt for w in weights}) == 1
        if any(packed) and not (one_format and not any(map(quantized.is_layer_mix, weights))):
            continue  # mixed formats stay separate (the forward takes either layout)
        for part in parts:
            del layers[part]
        layers[fused] = quantized.concatenate(weights) if any(packed) else jnp.concatenate(weights, axis=-1)
    return {**params, "layers": layers}


def packed_matrix_names(params: dict) -> list[str]:
    """The float layer matrices (3-d, [L, in, out]) that `with_packed_matmuls` packs, in params order
    (quantized ones are packed already)."""
    return [name for name, value in params["layers"].items() if value.ndim == 3 and not quantized.is_quantized(value)]


def with_packed_matmuls(params: dict) -> dict:
    """params with every layer matrix and a present lm_head packed for the native CPU matmuls: bfloat16 as
    row pairs in strips, float32 as strips; norms, biases and the embedding unchanged.

    Same memory as the matrices they replace. bfloat16 (CPUs with AVX512_BF16): the pairs are what
    vdpbf16ps reads, twice the multiply-adds per instruction of float32. Both: a strip stored whole makes
    the kernel's walk down K sequential, which a weight-bound decode step needs.
    """
    pack = native_bf16.pack_pairs if _dtype(params) == jnp.bfloat16 else native_f32.pack_strips
    layers = dict(params["layers"])
    for name in packed_matrix_names(params):
        layers[name] = pack(layers[name])
    packed = {**params, "layers": layers}
    if "lm_head" in params and not quantized.is_quantized(params["lm_head"]):
        packed["lm_head"] = pack(params["lm_head"])
    return packed


def with_materialised_head(params: dict, config) -> dict:
    """Tied embeddings: params plus lm_head = a contiguous copy of embed.T, else params unchanged.

    The LM head then streams [H, V] rows like every other matmul instead of XLA:CPU transposing the whole
    embedding inside each step (docs/benchmarks/runner-raw-speed.md, "Native decode kernels"). Costs one
    more embedding in memory (113 MB for SmolLM2-135M in float32).
    """
    if not config.tie_word_embeddings or "lm_head" in params or quantized.is_quantized(params["embed"]):
        return params  # a packed embedding is stored as the head's [H, V] already
    return {**params, "lm_head": jnp.transpose(params["embed"])}  # a new, contiguous array


def _dtype(params):
    """The model's float dtype: its float embedding's, or float32 where the embedding is packed."""
    embed = params["embed"]
    return jnp.float32 if quantized.is_quantized(embed) else embed.dtype


def packed_shapes(shape: tuple) -> tuple:
    """The shapes `with_packed_matmuls` may give a matrix of `shape` (none for vectors and norms)."""
    if len(shape) < 2:
        return ()
    return native_bf16.packed_shape(shape), native_f32.strips_shape(shape)
