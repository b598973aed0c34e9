"""The pure device step: forward + sampling fused in one program.

Contract: `make_step(config, attn_impl, max_logprobs, unroll_layers, batch_invariant, feed_width, page_size=)`
returns
    step(params, kv_pages, tokens, seqs, output_counts, prompt_mask, bitmask, logit_bias, (fed_tokens, state))
        -> (SamplerOutputs, kv_pages, (fed, state))
with no side effects, its inputs in the two-buffer wire format of runner/wire.py (plus the [S, V] penalty
arrays and the constraint arrays of runner/constraints.py); the runner jits it with kv_pages and the carried
pair donated (arguments 1 and 8) and compiles it once per bucket.
`fed_tokens` [feed_width] are the previous step's sampled ids (its `fed` output): a token row whose wire feed
column is r >= 0 takes fed_tokens[r] as its id, so a decode follows its last token without a host round trip
(the overlapped engine loop). `fed` is this step's sampled ids padded to feed_width (every bucket the same
shape, so any step can feed any other without a compile). `state` is the resident slot state
(runner/resident_view.py): a resident decode step's wire is rebuilt from it and its rows stored back; a full
step passes it through. Static:
config, attn_impl, max_logprobs, unroll_layers, batch_invariant and the bucket shapes. Everything else
(lengths, page tables, sampling knobs, seeds) is data. Only the S rows named by `logits_indices` go through
the LM head.
`make_multi_step(config, attn_impl, max_logprobs, unroll_layers, batch_invariant, feed_width, page_size=,
num_steps=k)` is the same step run k times in one program (multi-step decode; the plan holds one-token
decodes only, token row b = sequence row b): iteration i feeds iteration i-1's sampled ids back in, moves
positions, kv_lens and rng_step on by i and takes each row's KV slot from its page-table row; a position past
that row (the host gave it no page there) writes to the sink page 0. Returns the SamplerOutputs stacked
[k, ...], the KV pages, and the last iteration's ids as `fed` (with the resident state, untouched: a
multi-step plan always travels as a full wire).
`tp_axis` (both): the step runs per shard under tensor parallelism (runner/tensor_parallel.py wraps it in
shard_map; `config` is then one shard's): the forward's row-parallel matmuls psum over that mesh axis.
`abstract_inputs(bucket, vocab_size, feed_width, state_shape)` gives the ShapeDtypeStructs (tokens, seqs,
output_counts, prompt_mask, bitmask, logit_bias, (fed_tokens, state)) the runner lowers with.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from trellis_jax.field_ranges import MAX_LOGIT_BIAS
from trellis_jax.model import forward
from trellis_jax.runner import resident_view, wire
from trellis_jax.runner.buckets import Bucket
from trellis_jax.runner.constraints import bitmask_words
from trellis_jax.runner.sampling import sample


def _model(config, attn_impl, unroll_layers, batch_invariant, tp_axis=None):
    """forward(params, kv_pages, step_inputs) -> (logits [S, V], kv_pages) with the static options bound."""
    return functools.partial(
        forward,
        config=config,
        attn_impl=attn_impl,
        unroll_layers=unroll_layers,
        batch_invariant=batch_invariant,
        tp_axis=tp_axis,
    )


def _input_ids(inputs: wire.RunnerInputs, fed_tokens: jax.Array) -> jax.Array:
    """Each token row's id: the previous step's fed_tokens[r] where its feed column is r >= 0, else the host's."""
    return jnp.where(inputs.feed >= 0, fed_tokens[jnp.maximum(inputs.feed, 0)], inputs.model.token_ids)


def make_step(
    config,
    attn_impl: str | None,
    max_logprobs: int,
    unroll_layers: int = 1,
    batch_invariant: bool = False,
    feed_width: int = 1,
    tp_axis: str | None = None,
    *,
    page_size: int,
):
    model = _model(config, attn_impl, unroll_layers, batch_invariant, tp_axis)

    def step(params, kv_pages, tokens, seqs, output_counts, prompt_mask, bitmask, logit_bias, carried):
        fed_tokens, state = carried
        tokens, seqs, state = resident_view.expand(tokens, seqs, state, page_size=page_size)
        inputs = wire.decode(tokens, seqs, output_counts, prompt_mask, bitmask, logit_bias)
        logits, kv_pages = model(params, kv_pages, inputs.model._replace(token_ids=_input_ids(inputs, fed_tokens)))
        sampled = sample(logits, inputs.sampling, max_logprobs=max_logprobs)
        fed = jnp.zeros(feed_width, jnp.int32).at[: sampled.token_ids.shape[0]].set(sampled.token_ids)
        return sampled, kv_pages, (fed, state)

    return step


def make_multi_step(
    config,
    attn_impl: str | None,
    max_logprobs: int,
    unroll_layers: int = 1,
    batch_invariant: bool = False,
    feed_width: int = 1,
    *,
    page_size: int,
    num_steps: int,
    tp_axis: str | None = None,
):
    run_model = _model(config, attn_impl, unroll_layers, batch_invariant, tp_axis)

    def multi_step(params, kv_pages, tokens, seqs, output_counts, prompt_mask, bitmask, logit_bias, carried):
        fed_tokens, state = carried  # full wire only: the resident slots pass through untouched
        inputs = wire.decode(tokens, seqs, output_counts, prompt_mask, bitmask, logit_bias)
        model = inputs.model
        num_tokens, (num_rows, num_pages) = tokens.shape[0], model.page_table.shape
        first_ids = _input_ids(inputs, fed_tokens)
        rows = jnp.arange(num_tokens)
        live = rows < model.num_seqs  # decode-only: token row b is sequence row b; the rest is padding
        table = model.page_table[jnp.minimum(rows, num_rows - 1)]  # [T, P] each token row's page-table row
        width = min(num_tokens, num_rows)  # live rows are below both

        def iteration(carry, i):
            kv, ids = carry
            positions = model.positions + i
            page_index = positions // page_size
            page = jnp.take_along_axis(table, jnp.minimum(page_index, num_pages - 1)[:, None], axis=1)[:, 0]
            writes = live & (page_index < num_pages)  # past the row's pages: the sink page 0
            step_inputs = model._replace(
                token_ids=ids,
                positions=jnp.where(live, positions, 0),
                slot_mapping=jnp.where(writes, page * page_size + positions % page_size, 0),
                kv_lens=jnp.where(model.kv_lens > 0, jnp.minimum(model.kv_lens + i, num_pages * page_size), 0),
            )
            logits, kv = run_model(params, kv, step_inputs)
            sampled = sample(
                logits, inputs.sampling._replace(rng_step=inputs.sampling.rng_step + i), max_logprobs=max_logprobs
            )
            next_ids = jnp.zeros(num_tokens, jnp.int32).at[:width].set(sampled.token_ids[:width])
            return (kv, next_ids), sampled

        (kv_pages, last_ids), sampled = jax.lax.scan(
            iteration, (kv_pages, first_ids.astype(jnp.int32)), jnp.arange(num_steps, dtype=jnp.int32)
        )
        fed = jnp.zeros(feed_width, jnp.int32).at[:width].set(last_ids[:width])
        return sampled, kv_pages, (fed, state)

    return multi_step


def abstract_inputs(bucket: Bucket, vocab_size: int, feed_width: int = 1, state_shape: tuple = (2, 1)) -> tuple:
    """The shapes and dtypes of one bucket's step arguments after (params, kv_pages); `state_shape` is the
    resident slot state's (resident_view.initial_state)."""
    tokens, rows, pages = bucket
    return (
        jax.ShapeDtypeStruct((tokens, 4), jnp.int32),
        jax.ShapeDtypeStruct((rows, pages + wire.NUM_COLUMNS), jnp.int32),
        jax.ShapeDtypeStruct((rows, vocab_size), jnp.int32),
        jax.ShapeDtypeStruct((rows, vocab_size), jnp.bool_),
        jax.ShapeDtypeStruct((rows, bitmask_words(vocab_size)), jnp.int32),
        jax.ShapeDtypeStruct((rows, 2 * MAX_LOGIT_BIAS), jnp.int32),
        (jax.ShapeDtypeStruct((feed_width,), jnp.int32), jax.ShapeDtypeStruct(state_shape, jnp.int32)),
    )
