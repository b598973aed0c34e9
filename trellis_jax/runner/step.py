"""The pure device step: forward + sampling fused in one program.

Contract: `make_step(config, attn_impl, max_logprobs)` returns
    step(params, kv_pages, inputs: RunnerInputs) -> (SamplerOutputs, kv_pages)
with no side effects; the runner jits it with kv_pages donated (argument 1) and compiles it once per
bucket. Static: config, attn_impl, max_logprobs and the bucket shapes. Everything else (lengths, page
tables, sampling knobs, seeds) is data. Only the S rows named by `logits_indices` go through the LM head.
`abstract_inputs(bucket, vocab_size)` gives the ShapeDtypeStructs the runner lowers with.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from trellis_jax.model import forward
from trellis_jax.model.inputs import StepInputs
from trellis_jax.runner.buckets import Bucket
from trellis_jax.runner.sampling import SamplingInputs, sample


class RunnerInputs(NamedTuple):
    model: StepInputs
    sampling: SamplingInputs


def make_step(config, attn_impl: str | None, max_logprobs: int, unroll_layers: bool = False):
    def step(params, kv_pages, inputs: RunnerInputs):
        logits, kv_pages = forward(params, kv_pages, inputs.model, config=config, attn_impl=attn_impl,
                                   unroll_layers=unroll_layers)  # [S, V]
        return sample(logits, inputs.sampling, max_logprobs=max_logprobs), kv_pages
    return step


def abstract_inputs(bucket: Bucket, vocab_size: int) -> RunnerInputs:
    """The shapes and dtypes of one bucket's inputs (what `jit(...).lower` needs)."""
    tokens, rows, pages = bucket

    def i32(*shape):
        return jax.ShapeDtypeStruct(shape, jnp.int32)

    def f32(*shape):
        return jax.ShapeDtypeStruct(shape, jnp.float32)

    model = StepInputs(token_ids=i32(tokens), positions=i32(tokens), slot_mapping=i32(tokens),
                       page_table=i32(rows, pages), kv_lens=i32(rows), cu_q_lens=i32(rows + 1),
                       num_seqs=i32(), logits_indices=i32(rows))
    sampling = SamplingInputs(
        temperature=f32(rows), top_k=i32(rows), top_p=f32(rows), min_p=f32(rows),
        presence_penalty=f32(rows), frequency_penalty=f32(rows), repetition_penalty=f32(rows),
        seed=jax.ShapeDtypeStruct((rows,), jnp.uint32), rng_step=i32(rows), num_logprobs=i32(rows),
        output_counts=i32(rows, vocab_size), prompt_mask=jax.ShapeDtypeStruct((rows, vocab_size), jnp.bool_))
    return RunnerInputs(model, sampling)
