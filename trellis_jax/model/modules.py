"""The Llama-family model as Flax linen modules over paged KV, applied functionally to the loaders' params.

Contract: `LlamaModel(config, attn_impl=, unroll_layers=, batch_invariant=).apply({"params": params}, kv, batch)
-> (logits [S, vocab] float32, kv)` is the forward of docs/CONTRACTS.md ("Model"); model/forward.py wraps it.
`LlamaModel(config).init(rng, kv, batch)` declares the params: the tree of model/params.py (names, shapes, the
config's dtype; norms at 1, normal * init_scale elsewhere), every leaf a `nn.LogicallyPartitioned` carrying its
axes from `logical_axes.PARAM_AXES` (model/sharding.py maps them onto a mesh).

Why linen and why the modules read rather than own their weights: the tree a step gets comes in several
layouts (wq/wk/wv or fused w_qkv, plain, packed strips or quantized matrices, a tied head absent or
materialised), chosen by the matmul op's `prepare` at run time. `apply` binds whatever dict it is given, while
nnx's merge needs a graph of the exact layout. So each module declares its canonical weights at init and, when
applied, reads the given value as is (flax's own `param` would compare it with the init shape and refuse the
packed ones); `check_params` is what checks shapes. The scope layout keeps the tree flat: Attention and MLP
share their DecoderLayer's scope ("layers"), the embedding and the head the model's.

The layer stack is a scan over the layer index with the params whole (model/llama.py): each layer module
declares the stacked [num_layers, ...] weights and takes its layer index. Where the matmul op reads stacked weights in place
(`reads_in_place`: its native CPU kernels, and the packed layouts only they read) it gets the stacked matrix,
the index and the step's `rows` real tokens; else the layer's slice (the dynamic slice lax.scan would take).
Arithmetic: see model/forward.py's docstring (float32 stream, norms and RoPE; matmul inputs in the params' dtype).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from pallas_kernels.matmul import linear
from pallas_kernels.ragged_paged_attention import ragged_paged_attention, write_kv
from pallas_kernels.rms_norm import rms_norm  # Hugging Face's order; a native kernel on CPU
from trellis_jax.model.inputs import StepInputs
from trellis_jax.model.kv import KVPages
from trellis_jax.model.logical_axes import PARAM_AXES
from trellis_jax.model.rope import apply_rope


def weight(module: nn.Module, name: str, shape: tuple, axes: tuple, scale: float | None):
    """The param `name` of the module's scope: declared with its logical axes when initialising (ones when
    `scale` is None, else normal * scale), else the given value as it is (any layout)."""
    if module.is_initializing():

        def init(key, shape, dtype):
            return jnp.ones(shape, dtype) if scale is None else (scale * jax.random.normal(key, shape)).astype(dtype)

        return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.dtype(module.config.dtype))
    return nn.unbox(module.get_variable("params", name))


class _LayerPart(nn.Module):
    """A part of one decoder layer: declares stacked per-layer weights in the layer's scope and multiplies
    by them for the layer `layer` (native: the stacked matrix read in place, else the layer's slice)."""

    config: object
    dtype: str = "float32"  # the matmuls' input dtype
    native: bool = False
    implementation: str | None = None  # "native" when batch-invariant
    init_scale: float = 0.02
    tp_axis: str | None = None  # run per shard under shard_map: the row-parallel matmuls psum over this axis

    def stacked(self, name, shape, *, ones=False):
        """The stacked [num_layers, *shape] weight `name`, as given (declared at init: ones or normal * scale)."""
        axes = PARAM_AXES["layers"].get(name)  # fused layouts (w_qkv, w_gate_up) are never declared, only read
        return weight(self, name, (self.config.num_layers, *shape), axes, None if ones else self.init_scale)

    def has(self, name) -> bool:
        """Whether the given tree holds `name` (a fused layout); never while initialising."""
        return not self.is_initializing() and self.has_variable("params", name)

    def vector(self, name, shape, layer, *, ones=False):
        """The layer's slice of a norm or bias, float32 (they act on the float32 stream)."""
        return _slice(self.stacked(name, shape, ones=ones), layer).astype(jnp.float32)

    def matmul(self, h, name, shape, layer, rows, out_dtype):
        """h @ the layer's matrix `name` (canonical [K, N] `shape`), in out_dtype."""
        w = self.stacked(name, shape)
        if self.native:
            return linear(h, w, layer, rows, implementation=self.implementation, out_dtype=out_dtype)
        return linear(h, _slice(w, layer), implementation="xla", out_dtype=out_dtype)

    def row_parallel(self, y):
        """Add the shards' partial sums of a row-parallel matmul (wo, w_down) under tensor parallelism."""
        return y if self.tp_axis is None else jax.lax.psum(y, self.tp_axis)


def _slice(w, layer):
    """w[layer] as lax.scan slices its xs: the index is a layer id, never negative, so no wrap-around select."""
    return jax.tree.map(
        lambda a: jax.lax.dynamic_index_in_dim(a, layer, keepdims=False, allow_negative_indices=False), w
    )


class Attention(_LayerPart):
    """RMSNorm, q/k/v projections (fused w_qkv where prepared), RoPE, the KV write and paged attention, wo."""

    attn_impl: str | None = None

    @nn.compact
    def __call__(self, x, layer, rows, kv: KVPages, batch: StepInputs, inv_freq):
        c = self.config
        h = rms_norm(x, self.vector("attn_norm", (c.hidden_size,), layer, ones=True), c.rms_norm_eps).astype(self.dtype)
        q, k, v = self._project_qkv(h, layer, rows)
        q = apply_rope(q, batch.positions, inv_freq).astype(self.dtype)
        k = apply_rope(k, batch.positions, inv_freq)  # write_kv rounds k and v to the pages' dtype itself
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
            sliding_window=c.sliding_window,
            implementation=self.attn_impl,
        )  # [T, Hq, D]
        out = self.matmul(out.reshape(x.shape[0], c.q_size), "wo", (c.q_size, c.hidden_size), layer, rows, x.dtype)
        return self.row_parallel(out), KVPages(k_pages, v_pages)

    def _project_qkv(self, h, layer, rows):
        c, H = self.config, self.config.hidden_size
        if self.has("w_qkv"):  # fused by the matmul op's prepare: one matmul, split after
            qkv = self.matmul(h, "w_qkv", (H, c.q_size + 2 * c.kv_size), layer, rows, jnp.float32)
            q, k, v = jnp.split(qkv, [c.q_size, c.q_size + c.kv_size], axis=-1)
        else:
            sizes = {"wq": c.q_size, "wk": c.kv_size, "wv": c.kv_size}
            q, k, v = (self.matmul(h, name, (H, n), layer, rows, jnp.float32) for name, n in sizes.items())
        if c.attention_bias:
            sizes = {"bq": c.q_size, "bk": c.kv_size, "bv": c.kv_size}
            q, k, v = (t + self.vector(name, (n,), layer) for t, (name, n) in zip((q, k, v), sizes.items()))
        T = h.shape[0]
        return (
            q.reshape(T, c.num_heads, c.head_dim),
            k.reshape(T, c.num_kv_heads, c.head_dim),
            v.reshape(T, c.num_kv_heads, c.head_dim),
        )


class MLP(_LayerPart):
    """RMSNorm, the SiLU-gated MLP (fused w_gate_up where prepared), w_down."""

    @nn.compact
    def __call__(self, x, layer, rows):
        c, H, I = self.config, self.config.hidden_size, self.config.intermediate_size
        h = rms_norm(x, self.vector("mlp_norm", (H,), layer, ones=True), c.rms_norm_eps).astype(self.dtype)
        # Where the matmul's sums leave a native kernel as float32 anyway (the CPU kernels), the activation
        # takes them unrounded: in bfloat16, XLA:CPU rounded after every op of silu (a chain of converts that
        # cost 3x the float32 fusion) and lost precision doing so. XLA's own dots (GPU) keep the model dtype,
        # so their output traffic does not double.
        act_dtype = jnp.float32 if self.native else h.dtype
        if self.has("w_gate_up"):
            gate, up = jnp.split(self.matmul(h, "w_gate_up", (H, 2 * I), layer, rows, act_dtype), 2, axis=-1)
        else:
            gate = self.matmul(h, "w_gate", (H, I), layer, rows, act_dtype)
            up = self.matmul(h, "w_up", (H, I), layer, rows, act_dtype)
        down = self.matmul((jax.nn.silu(gate) * up).astype(h.dtype), "w_down", (I, H), layer, rows, x.dtype)
        return self.row_parallel(down)


class DecoderLayer(_LayerPart):
    """One pre-norm decoder layer: x + attention, then + MLP; the scan body ((x, kv), layer) -> ((x, kv), None)."""

    attn_impl: str | None = None

    @nn.compact
    def __call__(self, carry, layer, rows, batch: StepInputs, inv_freq):
        x, kv = carry
        parts = dict(
            config=self.config,
            dtype=self.dtype,
            native=self.native,
            implementation=self.implementation,
            init_scale=self.init_scale,
            tp_axis=self.tp_axis,
        )
        attention, mlp = Attention(attn_impl=self.attn_impl, **parts), MLP(**parts)
        nn.share_scope(self, attention)  # their weights sit side by side in "layers", as model/params.py has them
        nn.share_scope(self, mlp)
        attn_out, kv = attention(x, layer, rows, kv, batch, inv_freq)
        x = x + attn_out
        x = x + mlp(x, layer, rows)
        return (x, kv), None
