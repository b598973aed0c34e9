"""LlamaModel: the embedding, the scanned decoder stack and the LM head, as one Flax linen module.

Contract: `LlamaModel(config, attn_impl=None, unroll_layers=1, batch_invariant=False, init_scale=0.02)`;
`.apply({"params": params}, kv, batch) -> (logits [S, vocab] float32, kv)` for the rows batch.logits_indices
(model/forward.py validates first and is what callers use); `.init(rng, kv, batch)` declares the params of
model/params.py with their logical axes (see model/modules.py for how modules read a given tree);
`init_variables(config, key, scale)` runs it on `init_inputs(config)`, the smallest step.
The layers run under `lax.scan` over the layer index, the KV pages in the carry (compile time flat in depth),
each iteration applying `DecoderLayer` functionally to the stacked weights (`nn.scan` traced the body twice:
+0.2 s per compiled bucket on the default model); at init one direct call declares them. `unroll_layers`
(trellis_jax/layer_unroll.py: 1 scan, N layers per loop iteration, -1 full; the old True/False too) is the
scan's `unroll=`: same math, fewer or no while-loop iterations. `batch_invariant`: every matmul and the LM head through
the matmul op's native kernel (model/forward.py's docstring).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from pallas_kernels.matmul import is_packed_layout, linear, quantized, reads_in_place
from pallas_kernels.rms_norm import rms_norm
from trellis_jax import layer_unroll
from trellis_jax.model.inputs import StepInputs, build_step_inputs
from trellis_jax.model.kv import KVPages, init_kv_pages
from trellis_jax.model.logical_axes import PARAM_AXES
from trellis_jax.model.modules import DecoderLayer, weight
from trellis_jax.model.rope import inverse_frequencies


class Embedding(nn.Module):
    """embed [V, H]: token rows into the float32 stream, and (tied) the head's logits. A quantized table is
    kept packed as the tied head's [H, V], so the lookup gathers its columns."""

    config: object
    init_scale: float = 0.02

    def setup(self):
        c = self.config
        self.embed = weight(self, "embed", (c.vocab_size, c.hidden_size), PARAM_AXES["embed"], self.init_scale)

    def compute_dtype(self):
        """The matmuls' input dtype: the table's (the config's for a packed one)."""
        return jnp.dtype(self.config.dtype) if quantized.is_quantized(self.embed) else self.embed.dtype

    def __call__(self, token_ids):
        embed = self.embed
        if quantized.is_quantized(embed):
            return quantized.gather_columns(embed, token_ids)  # [T, H] float32
        return embed[token_ids].astype(jnp.float32)  # [T, H]

    def attend(self, last):
        """Tied logits last [S, H] @ embed.T, float32."""
        embed = self.embed
        if quantized.is_quantized(embed):  # stored as the head's [H, V]: the op reads it packed
            return linear(last, embed, out_dtype=jnp.float32)
        # XLA reads embed.T in place; a native kernel would need it materialised (matmul/layouts.py)
        return linear(last, embed.T, implementation="xla", out_dtype=jnp.float32)


class LMHead(nn.Module):
    """final_norm, then lm_head when present (untied, or a tied one materialised as embed.T), else the
    embedding's `attend`. `rows`: the sequences that are real (the native kernel skips the rest)."""

    config: object
    implementation: str | None = None
    init_scale: float = 0.02

    @nn.compact
    def __call__(self, x, embedding: Embedding, rows, dtype):
        c = self.config
        final_norm = weight(self, "final_norm", (c.hidden_size,), PARAM_AXES["final_norm"], None)
        last = rms_norm(x, final_norm.astype(jnp.float32), c.rms_norm_eps).astype(dtype)  # [S, H]
        # Declared for untied models; when applied, a given lm_head (untied, or tied and materialised) is used.
        has_head = not c.tie_word_embeddings if self.is_initializing() else self.has_variable("params", "lm_head")
        if has_head:
            head = weight(self, "lm_head", (c.hidden_size, c.vocab_size), PARAM_AXES["lm_head"], self.init_scale)
            stacked, layer = (head, None) if quantized.is_quantized(head) else (head[None], 0)  # packed: [H, V]
            return linear(last, stacked, layer, rows, implementation=self.implementation, out_dtype=jnp.float32)
        if self.implementation == "native":
            raise ValueError(
                "batch_invariant needs the LM head as a matrix: materialise a tied head first "
                "(pallas_kernels.matmul.layouts.with_materialised_head)"
            )
        return embedding.attend(last)


class LlamaModel(nn.Module):
    """Embedding -> decoder layers (lax.scan, stacked weights whole, KV pages in the carry) -> LM head."""

    config: object
    attn_impl: str | None = None
    unroll_layers: int | bool = layer_unroll.SCAN  # any layer_unroll spelling
    batch_invariant: bool = False
    init_scale: float = 0.02
    tp_axis: str | None = None  # per shard under shard_map: the layers' row-parallel matmuls psum over it

    @nn.compact
    def __call__(self, kv: KVPages, batch: StepInputs):
        c = self.config
        implementation = "native" if self.batch_invariant else None
        embedding = Embedding(c, self.init_scale)
        head = LMHead(c, implementation, self.init_scale)
        nn.share_scope(self, embedding)  # embed, final_norm and lm_head sit at the top of the tree
        nn.share_scope(self, head)
        x = embedding(batch.token_ids)
        dtype = embedding.compute_dtype()
        layer = functools.partial(
            DecoderLayer,
            c,
            dtype=dtype.name,
            native=self._reads_in_place(jax.ShapeDtypeStruct(x.shape, dtype)),
            implementation=implementation,
            init_scale=self.init_scale,
            attn_impl=self.attn_impl,
            tp_axis=self.tp_axis,
        )
        rows = batch.cu_q_lens[batch.num_seqs]  # the step's real token rows
        inv_freq = inverse_frequencies(c.head_dim, c.rope_theta, c.rope_scaling)
        if self.is_initializing():  # the weights are declared stacked, whole: one layer's call declares them all
            (x, kv), _ = layer(name="layers")((x, KVPages(*kv)), jnp.int32(0), rows, batch, inv_freq)
        else:  # lax.scan over the layer applied functionally: one trace of its body (nn.scan takes two)
            weights = {"params": self.variables["params"]["layers"]}
            apply = layer(parent=None).apply

            def body(carry, index):
                return apply(weights, carry, index, rows, batch, inv_freq)

            layer_ids = jnp.arange(c.num_layers, dtype=jnp.int32)
            unroll = layer_unroll.scan_unroll(self.unroll_layers, c.num_layers)
            (x, kv), _ = jax.lax.scan(body, (x, KVPages(*kv)), layer_ids, unroll=unroll)
        logits = head(x[batch.logits_indices], embedding, batch.num_seqs, dtype)
        return logits.astype(jnp.float32), kv

    def _reads_in_place(self, matmul_input) -> bool:
        """Whether the layers hand the matmul op the stacked matrices (decided on the first one given)."""
        if self.is_initializing():
            return False
        layers = nn.unbox(self.variables["params"]["layers"])
        first = next(value for value in layers.values() if is_packed_layout(value) or value.ndim == 3)
        # A partial unroll still slices the weights by a traced layer index, as the scan does: only a full one
        # makes the slices static.
        unrolled = layer_unroll.fully_unrolled(self.unroll_layers, self.config.num_layers)
        return reads_in_place(matmul_input, first, batch_invariant=self.batch_invariant, unroll=unrolled)


def init_inputs(config) -> tuple[KVPages, StepInputs]:
    """The smallest (kv, batch) `LlamaModel.init` runs on: one token, two pages of one slot."""
    return init_kv_pages(config, 2, 1), build_step_inputs([[0]], [0], [[1]], 1)


@functools.partial(jax.jit, static_argnames=("config", "scale"))
def init_variables(config, key: jax.Array, scale: float = 0.02) -> dict:
    """`LlamaModel.init` on `init_inputs`, jitted once per (config, scale) (the forward it traces is dead code
    there): {"params": the boxed tree}."""
    return LlamaModel(config, init_scale=scale).init(key, *init_inputs(config))
