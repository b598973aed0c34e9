"""The functional Llama-family forward over paged KV: (params, kv, batch) -> (logits, kv).

Contract (docs/CONTRACTS.md, "Model"): `forward(params, kv, batch, *, config, attn_impl)` embeds
batch.token_ids, runs the decoder layers with `lax.scan` over the stacked layer weights (compile time
flat in depth), carrying the KV pages through the scan, and returns float32 logits [S, vocab] for the
rows batch.logits_indices plus the updated pages. Each layer writes its new K/V with `write_kv(...,
layer=i)` and attends with `ragged_paged_attention(..., layer=i)`: the single attention dispatch point
(`attn_impl` picks the kernel backend; None lets the kernel package choose). Arithmetic: every matmul
sums in float32 and takes its inputs in the params' dtype; the residual stream, norms, q/k/v and RoPE are
float32, then q is rounded to the params' dtype and k/v to the KV pages'. For a float32 model that is
Hugging Face's arithmetic. For a bfloat16 model it is llama.cpp's rather than Hugging Face's (which keeps
the stream and q/k/v in bfloat16, rounding after every matmul and add): its greedy tokens then track the
float32 engine's far more often, at no measurable cost (docs/benchmarks/dtype-bf16.md, "bf16 arithmetic").
Every matmul is one call to the matmul op (`pallas_kernels.matmul.linear`), on weights in whatever layout
its `prepare` chose; where the op reads stacked weights in place (`reads_in_place`: its native CPU kernels,
and the packed layouts only they read), the scan hands it the stacked matrices and the layer index, and
the step's `rows` real tokens (the bucket's padding rows come out zero); else the scan's slice.
The LM head uses `lm_head` when present (for tied models, a materialised embed.T).
`batch_invariant=True` (static; `--deterministic`) sends every matmul and the LM head through the op's native
kernel whatever the step's row count: each output element there is one float32 sum over K in a fixed order
(native/layer_matmul*.cc), so a token row's result does not depend on the other rows, their number or its
place among them (XLA's GEMM may block K differently per shape). The caller checks that kernel runs here.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from pallas_kernels.matmul import is_packed_layout, linear, quantized, reads_in_place
from pallas_kernels.ragged_paged_attention import ragged_paged_attention, write_kv
from pallas_kernels.rms_norm import rms_norm  # Hugging Face's order; a native kernel on CPU
from trellis_jax.model.inputs import StepInputs
from trellis_jax.model.kv import KVPages
from trellis_jax.model.params import check_params
from trellis_jax.model.rope import apply_rope, inverse_frequencies

NORMS = ("attn_norm", "mlp_norm")  # the per-layer norm weights (cast to float32 once, before the scan)


def _project_qkv(h, lp, config):
    if "w_qkv" in lp:  # fused projections (the matmul op's prepare): one matmul, split after
        qkv = lp.matmul(h, "w_qkv", out_dtype=jnp.float32)
        q, k, v = jnp.split(qkv, [config.q_size, config.q_size + config.kv_size], axis=-1)
    else:
        q, k, v = (lp.matmul(h, name, out_dtype=jnp.float32) for name in ("wq", "wk", "wv"))
    if config.attention_bias:
        q, k, v = q + lp["bq"], k + lp["bk"], v + lp["bv"]
    rows = h.shape[0]
    return (
        q.reshape(rows, config.num_heads, config.head_dim),
        k.reshape(rows, config.num_kv_heads, config.head_dim),
        v.reshape(rows, config.num_kv_heads, config.head_dim),
    )


def _row_parallel(y, tp_axis):
    """Add the shards' partial sums of a row-parallel matmul (wo, w_down) under tensor parallelism."""
    return y if tp_axis is None else jax.lax.psum(y, tp_axis)


def _attention(x, lp, layer, kv, batch: StepInputs, config, inv_freq, attn_impl, tp_axis=None):
    h = rms_norm(x, lp["attn_norm"], config.rms_norm_eps).astype(lp.dtype)
    q, k, v = _project_qkv(h, lp, config)
    q = apply_rope(q, batch.positions, inv_freq)
    k = apply_rope(k, batch.positions, inv_freq)
    q = q.astype(lp.dtype)  # write_kv rounds k and v to the pages' dtype itself
    k_pages, v_pages = write_kv(kv.k, kv.v, layer, k, v, batch.slot_mapping)
    out = ragged_paged_attention(
        q,
        k_pages,
        v_pages,
        layer,
        batch.kv_lens,
        batch.page_table,
        batch.cu_q_lens,
        batch.num_seqs,
        sliding_window=config.sliding_window,
        implementation=attn_impl,
    )  # [T, Hq, D]
    attn = lp.matmul(out.reshape(x.shape[0], config.q_size), "wo", out_dtype=x.dtype)
    return _row_parallel(attn, tp_axis), KVPages(k_pages, v_pages)


def _mlp(x, lp, config, tp_axis=None):
    h = rms_norm(x, lp["mlp_norm"], config.rms_norm_eps).astype(lp.dtype)
    # Where the matmul's sums leave a native kernel as float32 anyway (the CPU kernels), the activation
    # takes them unrounded: in bfloat16, XLA:CPU rounded after every op of silu (a chain of converts that
    # cost 3x the float32 fusion) and lost precision doing so. XLA's own dots (GPU) keep the model dtype,
    # so their output traffic does not double.
    act_dtype = jnp.float32 if lp.native else h.dtype
    if "w_gate_up" in lp:
        gate, up = jnp.split(lp.matmul(h, "w_gate_up", out_dtype=act_dtype), 2, axis=-1)
    else:
        gate, up = lp.matmul(h, "w_gate", out_dtype=act_dtype), lp.matmul(h, "w_up", out_dtype=act_dtype)
    return _row_parallel(lp.matmul((jax.nn.silu(gate) * up).astype(h.dtype), "w_down", out_dtype=x.dtype), tp_axis)


class _LayerParams:
    """One layer's weights inside the scan: the scanned slice, plus the stacked matrices the matmul op
    reads in place (with the layer index and the step's `rows` real tokens; `implementation` "native"
    when batch-invariant)."""

    def __init__(self, sliced, stacked, layer, rows, dtype, implementation):
        self.sliced, self.stacked, self.layer, self.rows, self.dtype = sliced, stacked, layer, rows, dtype
        self.implementation = implementation

    def __getitem__(self, name):
        return self.sliced[name]

    def __contains__(self, name):
        return name in self.sliced or name in self.stacked

    @property
    def native(self) -> bool:
        """Whether the matrices go through the native CPU kernels (all or none; their sums are float32)."""
        return bool(self.stacked)

    def matmul(self, h, name, out_dtype=None):
        """h @ the layer's matrix `name`, in out_dtype (default h's dtype)."""
        if name in self.stacked:
            return linear(
                h, self.stacked[name], self.layer, self.rows, implementation=self.implementation, out_dtype=out_dtype
            )
        return linear(h, self.sliced[name], implementation="xla", out_dtype=out_dtype)


def _decoder_layer(
    carry, layer_inputs, *, batch, config, inv_freq, attn_impl, stacked, rows, dtype, implementation, tp_axis
):
    x, kv = carry
    sliced, layer = layer_inputs
    lp = _LayerParams(sliced, stacked, layer, rows, dtype, implementation)
    attn_out, kv = _attention(x, lp, layer, kv, batch, config, inv_freq, attn_impl, tp_axis)
    x = x + attn_out
    x = x + _mlp(x, lp, config, tp_axis)
    return (x, kv), None


def validate(params: dict, kv: KVPages, batch: StepInputs, config) -> None:
    """Trace-time checks (shapes only, free at run time); ValueError names the offending values."""
    check_params(params, config)
    expected = (config.num_layers, config.num_kv_heads, config.head_dim)
    if len(kv) != 2 or kv[0].shape != kv[1].shape or (kv[0].shape[:2] + kv[0].shape[4:]) != expected:
        raise ValueError(
            f"KV pages must be [L={expected[0]}, Hkv={expected[1]}, P, S, D={expected[2]}] for this "
            f"config, got {[tuple(x.shape) for x in kv]}"
        )
    rows = batch.token_ids.shape
    if batch.positions.shape != rows or batch.slot_mapping.shape != rows:
        raise ValueError(
            f"token_ids {rows}, positions {batch.positions.shape} and slot_mapping "
            f"{batch.slot_mapping.shape} must have the same shape [T]"
        )


def forward(
    params: dict,
    kv: KVPages,
    batch: StepInputs,
    *,
    config,
    attn_impl: str | None = None,
    unroll_layers: bool = False,
    batch_invariant: bool = False,
    tp_axis: str | None = None,
):
    """-> (logits [S, vocab] float32, kv). `config`, `attn_impl`, `unroll_layers`, `batch_invariant` and
    `tp_axis` are static under jit (`batch_invariant`: see the module docstring).

    `tp_axis`: the mesh axis of tensor parallelism when run per shard under shard_map (runner/tensor_parallel.py):
    params, KV pages and `config` are then one shard's, and the row-parallel matmuls (wo, w_down) psum over it.

    `unroll_layers` unrolls the layer scan: same math, no while loop. On an H200 it made a 1B model's decode
    step ~1.4x faster and prefill ~10% faster, at ~8x the compile time (docs/benchmarks/gpu.md); off by default.
    """
    validate(params, kv, batch, config)
    inv_freq = inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
    embed = params["embed"]
    if quantized.is_quantized(embed):  # kept packed, as the tied head's [H, V]: look up its columns
        dtype = jnp.dtype(config.dtype)
        x = quantized.gather_columns(embed, batch.token_ids)  # [T, H] float32
    else:
        dtype = embed.dtype  # the matmuls' input dtype; the residual stream is float32
        x = embed[batch.token_ids].astype(jnp.float32)  # [T, H]
    layer_ids = jnp.arange(config.num_layers, dtype=jnp.int32)
    layers = params["layers"]
    matrices = [name for name, value in layers.items() if value.ndim == 3 or is_packed_layout(value)]
    matmul_input = jax.ShapeDtypeStruct(x.shape, dtype)  # what the matmuls are fed (chosen at trace time)
    native = reads_in_place(matmul_input, layers[matrices[0]], batch_invariant=batch_invariant, unroll=unroll_layers)
    implementation = "native" if batch_invariant else None
    stacked = {name: layers[name] for name in matrices} if native else {}
    sliced = {
        name: value.astype(jnp.float32) if name in NORMS else value
        for name, value in layers.items()
        if name not in stacked
    }  # norms act on the float32 stream
    step = functools.partial(
        _decoder_layer,
        batch=batch,
        config=config,
        inv_freq=inv_freq,
        attn_impl=attn_impl,
        stacked=stacked,
        rows=batch.cu_q_lens[batch.num_seqs],
        dtype=dtype,
        implementation=implementation,
        tp_axis=tp_axis,
    )
    (x, kv), _ = jax.lax.scan(step, (x, KVPages(*kv)), (sliced, layer_ids), unroll=bool(unroll_layers))
    final_norm = params["final_norm"].astype(jnp.float32)
    last = rms_norm(x[batch.logits_indices], final_norm, config.rms_norm_eps).astype(dtype)  # [S, H]
    if "lm_head" in params:  # untied, or tied with embed.T materialised (the matmul op's prepare)
        head = params["lm_head"]
        stacked, layer = (head, None) if quantized.is_quantized(head) else (head[None], 0)  # packed: [H, V] as is
        logits = linear(last, stacked, layer, batch.num_seqs, implementation=implementation, out_dtype=jnp.float32)
    elif batch_invariant:
        raise ValueError(
            "batch_invariant needs the LM head as a matrix: materialise a tied head first "
            "(pallas_kernels.matmul.layouts.with_materialised_head)"
        )
    else:
        if quantized.is_quantized(embed):  # stored as the head's [H, V]: the op reads it packed
            logits = linear(last, embed, out_dtype=jnp.float32)
        else:  # XLA reads embed.T in place; a native kernel would need it materialised (layouts.py)
            logits = linear(last, embed.T, implementation="xla", out_dtype=jnp.float32)
    return logits.astype(jnp.float32), kv


# Jitted entry point: config/attn_impl static (hashable), KV pages donated so the scatter is in place.
jit_forward = jax.jit(
    forward,
    static_argnames=("config", "attn_impl", "unroll_layers", "batch_invariant", "tp_axis"),
    donate_argnames=("kv",),
)
