"""The pure device step: forward + sampling fused in one program.

Contract: `make_step(config, attn_impl, max_logprobs, unroll_layers, batch_invariant)` returns
    step(params, kv_pages, tokens, seqs, output_counts, prompt_mask, bitmask, logit_bias) -> (SamplerOutputs, kv_pages)
with no side effects, its inputs in the two-buffer wire format of runner/wire.py (plus the [S, V] penalty
arrays and the constraint arrays of runner/constraints.py); the runner jits it with kv_pages donated (argument 1) and compiles it once per bucket. Static:
config, attn_impl, max_logprobs, unroll_layers, batch_invariant and the bucket shapes. Everything else
(lengths, page tables, sampling knobs, seeds) is data. Only the S rows named by `logits_indices` go through
the LM head.
`abstract_inputs(bucket, vocab_size)` gives the ShapeDtypeStructs (tokens, seqs, output_counts,
prompt_mask, bitmask, logit_bias) the runner lowers with.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from trellis_jax.field_ranges import MAX_LOGIT_BIAS
from trellis_jax.model import forward
from trellis_jax.runner import wire
from trellis_jax.runner.buckets import Bucket
from trellis_jax.runner.constraints import bitmask_words
from trellis_jax.runner.sampling import sample


def make_step(
    config, attn_impl: str | None, max_logprobs: int, unroll_layers: bool = False, batch_invariant: bool = False
):
    def step(params, kv_pages, tokens, seqs, output_counts, prompt_mask, bitmask, logit_bias):
        inputs = wire.decode(tokens, seqs, output_counts, prompt_mask, bitmask, logit_bias)
        logits, kv_pages = forward(
            params,
            kv_pages,
            inputs.model,
            config=config,
            attn_impl=attn_impl,
            unroll_layers=unroll_layers,
            batch_invariant=batch_invariant,
        )  # [S, V]
        return sample(logits, inputs.sampling, max_logprobs=max_logprobs), kv_pages

    return step


def abstract_inputs(bucket: Bucket, vocab_size: int) -> tuple:
    """The shapes and dtypes of one bucket's step arguments after (params, kv_pages)."""
    tokens, rows, pages = bucket
    return (
        jax.ShapeDtypeStruct((tokens, 3), jnp.int32),
        jax.ShapeDtypeStruct((rows, pages + wire.NUM_COLUMNS), jnp.int32),
        jax.ShapeDtypeStruct((rows, vocab_size), jnp.int32),
        jax.ShapeDtypeStruct((rows, vocab_size), jnp.bool_),
        jax.ShapeDtypeStruct((rows, bitmask_words(vocab_size)), jnp.int32),
        jax.ShapeDtypeStruct((rows, 2 * MAX_LOGIT_BIAS), jnp.int32),
    )
