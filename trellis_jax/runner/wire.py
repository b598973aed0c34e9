"""The step's host inputs as two int32 buffers: two host-to-device transfers per step instead of eighteen.

Contract: `encode(model_inputs, knobs, feed=None, slots=None) -> (tokens [T, 4], seqs [S, P + 15])`, numpy int32,
from a PackedStep's StepInputs and sampling knobs: per token row (token id, position, KV slot, feed: the row of the
previous step's sampled tokens this row takes its id from on the device, -1 = the host id); per sequence
row its page-table row, then kv_len, its end in cu_q_lens, its logits index, top_k, rng_step,
num_logprobs, the number of sequences (the same in every row), the resident slot the step stores the row in
(-1: none; runner/resident.py; the model never reads it), and the seed and the float knobs
bit-cast to int32. The dtypes are field_ranges.WIRE_INT / WIRE_FLOAT / WIRE_SEED, which also bound what a
request may ask for (field_ranges.FIELD_RANGES). `decode(tokens, seqs, output_counts, prompt_mask, bitmask,
logit_bias) -> RunnerInputs` runs inside the
jitted step and slices them back out (static offsets: the bucket is the buffers' shapes).

Why: every input array of a jitted call is its own host-to-device copy; on a GPU that is a transfer and
a dispatch each, and host work was much of an H200 decode step's time (docs/benchmarks/gpu.md,
"Whole model"). The [S, V] penalty arrays and the constraint arrays (runner/constraints.py) stay
separate: they are device-resident neutral arrays unless a row has a penalty, a grammar or a logit_bias.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from trellis_jax.field_ranges import WIRE_FLOAT, WIRE_INT, WIRE_SEED
from trellis_jax.model.inputs import StepInputs
from trellis_jax.runner.sampling import SamplingInputs

INT_COLUMNS = ("kv_lens", "cu_q_end", "logits_indices", "top_k", "rng_step", "num_logprobs", "num_seqs", "slot")
BITCAST_COLUMNS = (
    "seed",
    "temperature",
    "top_p",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
)
NUM_COLUMNS = len(INT_COLUMNS) + len(BITCAST_COLUMNS)  # after the page-table row
COLUMN = {name: i for i, name in enumerate(INT_COLUMNS + BITCAST_COLUMNS)}  # offset after the page-table row


class RunnerInputs(NamedTuple):
    """What the step computes with, decoded from the wire."""

    model: StepInputs
    sampling: SamplingInputs
    feed: jax.Array  # [T] i32: row of the previous step's sampled tokens to take as this row's id; -1: host id


def encode(
    model: StepInputs, knobs: dict, feed: np.ndarray | None = None, slots: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    feed = np.full(model.token_ids.shape, -1, WIRE_INT) if feed is None else feed
    tokens = np.stack([model.token_ids, model.positions, model.slot_mapping, feed], axis=1).astype(WIRE_INT)
    rows = model.kv_lens.shape[0]
    ints = {
        "kv_lens": model.kv_lens,
        "cu_q_end": model.cu_q_lens[1:],
        "logits_indices": model.logits_indices,
        "top_k": knobs["top_k"],
        "rng_step": knobs["rng_step"],
        "num_logprobs": knobs["num_logprobs"],
        "num_seqs": np.full(rows, model.num_seqs, np.int32),
        "slot": np.full(rows, -1, np.int32) if slots is None else slots,
    }
    columns = [np.asarray(ints[name], WIRE_INT) for name in INT_COLUMNS]
    columns += [np.ascontiguousarray(knobs[name]).view(WIRE_INT) for name in BITCAST_COLUMNS]
    seqs = np.concatenate([model.page_table.astype(WIRE_INT), np.stack(columns, axis=1)], axis=1)
    return np.ascontiguousarray(tokens), np.ascontiguousarray(seqs)


def decode(
    tokens: jax.Array,
    seqs: jax.Array,
    output_counts: jax.Array,
    prompt_mask: jax.Array,
    bitmask: jax.Array | None = None,
    logit_bias: jax.Array | None = None,
):
    pages = seqs.shape[1] - NUM_COLUMNS
    column = {name: seqs[:, pages + i] for i, name in enumerate(INT_COLUMNS + BITCAST_COLUMNS)}

    def bits(name, dtype):
        return jax.lax.bitcast_convert_type(column[name], dtype)

    model = StepInputs(
        token_ids=tokens[:, 0],
        positions=tokens[:, 1],
        slot_mapping=tokens[:, 2],
        page_table=seqs[:, :pages],
        kv_lens=column["kv_lens"],
        cu_q_lens=jnp.concatenate([jnp.zeros(1, jnp.int32), column["cu_q_end"]]),
        num_seqs=column["num_seqs"][0],
        logits_indices=column["logits_indices"],
    )
    sampling = SamplingInputs(
        temperature=bits("temperature", WIRE_FLOAT),
        top_k=column["top_k"],
        top_p=bits("top_p", WIRE_FLOAT),
        min_p=bits("min_p", WIRE_FLOAT),
        presence_penalty=bits("presence_penalty", WIRE_FLOAT),
        frequency_penalty=bits("frequency_penalty", WIRE_FLOAT),
        repetition_penalty=bits("repetition_penalty", WIRE_FLOAT),
        seed=bits("seed", WIRE_SEED),
        rng_step=column["rng_step"],
        num_logprobs=column["num_logprobs"],
        output_counts=output_counts,
        prompt_mask=prompt_mask,
        bitmask=bitmask,
        logit_bias=logit_bias,
    )
    return RunnerInputs(model, sampling, tokens[:, 3])
