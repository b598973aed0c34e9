"""Packing: a host `StepPlan` -> padded numpy arrays of one compiled bucket (the ragged layout).

Contract: `pack(plan, buckets, page_size=, num_pages=, vocab_size=, max_logprobs=)` validates the plan
(clear ValueError on bad ids, pages, positions or knobs; BucketOverflowError past the largest bucket)
and returns a `PackedStep`: the bucket, the model's `StepInputs`, the sampling knobs, the penalty and
constraint arrays (None where no row needs them), which rows sample, and the token rows whose id is a
PENDING_TOKEN (fed on the device from the previous step; packed as 0). Padding follows docs/CONTRACTS.md:
padded token rows write to slot 0 of the sink page 0, padded
page-table entries are 0, padded sequences have kv_len 0 and an empty query range. Only the pages a
sequence needs (ceil(kv_len / page_size)) enter its page-table row, so the page bucket is the smallest
that covers the step's longest context.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trellis_jax.field_ranges import FIELD_RANGES, WIRE_FLOAT, WIRE_INT, WIRE_SEED
from trellis_jax.model.inputs import StepInputs
from trellis_jax.runner.buckets import Bucket, BucketSet
from trellis_jax.runner.constraints import constraint_arrays
from trellis_jax.runner.penalties import has_penalty, penalty_arrays
from trellis_jax.step_plan import PENDING_TOKEN, SamplingArrays, SequenceWork, StepPlan

SEED_MODULUS = 2**32  # seeds are folded into uint32 (the PRNG key's width)


@dataclass(frozen=True)
class PackedStep:
    bucket: Bucket
    model_inputs: StepInputs | None  # numpy int32 arrays, bucket-shaped (None: a resident step, resident.py)
    knobs: dict | None  # SamplingInputs field -> numpy array of shape [S]; penalties separately
    penalties: tuple | None  # (output_counts [S, V] i32, prompt_mask [S, V] bool) or None: none active
    bitmask: np.ndarray | None  # [S, ceil(V/32)] i32 (constraints.py) or None: no grammar row
    logit_bias: np.ndarray | None  # [S, 2 * MAX_LOGIT_BIAS] i32 or None: no row has a logit_bias
    sampled_rows: list[tuple[int, str, int]]  # (row, request_id, num_logprobs) for sample=True rows
    pending_rows: list[tuple[int, str]]  # (token row, request_id): PENDING_TOKEN rows, fed on the device


def pack(
    plan: StepPlan,
    buckets: BucketSet,
    *,
    page_size: int,
    num_pages: int,
    vocab_size: int,
    max_logprobs: int,
    max_context_len: int | None = None,
) -> PackedStep:
    seqs = plan.sequences
    if not seqs:
        raise ValueError("cannot run an empty StepPlan")
    _check_unique_ids(seqs)
    longest = max(seqs, key=lambda s: s.kv_len)
    if max_context_len is not None and longest.kv_len > max_context_len:
        raise ValueError(
            f"request {longest.request_id!r}: {longest.kv_len} tokens of context exceed "
            f"max_context_len={max_context_len}"
        )
    _check_multi_step(plan)
    pages_needed = [_pages_needed(s, page_size, plan.decode_steps) for s in seqs]
    bucket = buckets.select(plan.num_tokens, len(seqs), max(pages_needed))
    model_inputs = _pack_model_inputs(seqs, bucket, pages_needed, page_size, num_pages, vocab_size)
    for s in seqs:
        _check_sampling(s, max_logprobs)
    knobs = _pack_knobs(seqs, bucket.num_seqs)
    penalties, bitmask, logit_bias = side_arrays(seqs, bucket.num_seqs, vocab_size)
    sampled = [(row, s.request_id, s.sampling.num_logprobs) for row, s in enumerate(seqs) if s.sample]
    return PackedStep(
        bucket,
        model_inputs,
        knobs,
        penalties,
        bitmask,
        logit_bias,
        sampled,
        _pending_rows(seqs, model_inputs.cu_q_lens),
    )


def side_arrays(seqs, rows: int, vocab_size: int) -> tuple:
    """(penalties, bitmask, logit_bias) of PackedStep for these sequences in a bucket of `rows` rows."""
    active = [
        s.sample
        and has_penalty(s.sampling.presence_penalty, s.sampling.frequency_penalty, s.sampling.repetition_penalty)
        for s in seqs
    ]
    penalties = penalty_arrays(
        [s.penalty_context for s in seqs], [s.prompt_token_ids for s in seqs], active, rows, vocab_size
    )
    return (penalties, *constraint_arrays(seqs, rows, vocab_size))


def _pending_rows(seqs, cu_q_lens) -> list[tuple[int, str]]:
    """(token row, request id) of every PENDING_TOKEN; only a one-token row may hold one (a decode's input)."""
    rows = []
    for b, seq in enumerate(seqs):
        if PENDING_TOKEN in seq.token_ids:
            if len(seq.token_ids) != 1:
                raise ValueError(f"request {seq.request_id!r}: a pending token must be a row's only token")
            rows.append((int(cu_q_lens[b]), seq.request_id))
    return rows


def _check_multi_step(plan: StepPlan) -> None:
    """A multi-step plan (decode_steps > 1) holds only one-token decodes that sample, with no page copies,
    penalties or grammar masks: the device loop feeds each row its own sampled token and nothing else."""
    k = plan.decode_steps
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"decode_steps must be a positive int, got {k!r}")
    if k == 1:
        return
    if plan.page_copies:
        raise ValueError("a multi-step plan (decode_steps > 1) cannot copy pages")
    for s in plan.sequences:
        if len(s.token_ids) != 1 or not s.sample or s.bitmask is not None or s.penalty_context:
            raise ValueError(
                f"request {s.request_id!r}: a multi-step plan holds only one-token decodes that sample, "
                "without a grammar mask or penalties"
            )
        if has_penalty(s.sampling.presence_penalty, s.sampling.frequency_penalty, s.sampling.repetition_penalty):
            raise ValueError(f"request {s.request_id!r}: penalties cannot run multi-step (counts live on the host)")
        if not 1 <= s.num_steps <= k:
            raise ValueError(f"request {s.request_id!r}: num_steps must be in 1..{k}, got {s.num_steps}")


def _pages_needed(seq: SequenceWork, page_size: int, decode_steps: int = 1) -> int:
    """Pages of the row's page-table row: those its kv_len needs, and in a multi-step plan those of the
    positions its later iterations write, as far as page_ids reach (past them the device writes to the sink)."""
    if not seq.token_ids:
        raise ValueError(f"request {seq.request_id!r}: a SequenceWork needs at least one token")
    if seq.start_pos < 0:
        raise ValueError(f"request {seq.request_id!r}: start_pos must be >= 0, got {seq.start_pos}")
    needed = -(-seq.kv_len // page_size)
    if len(seq.page_ids) < needed:
        raise ValueError(
            f"request {seq.request_id!r}: {seq.kv_len} tokens need {needed} pages of "
            f"{page_size}, page_ids has {len(seq.page_ids)}"
        )
    if decode_steps > 1:
        ahead = -(-(seq.kv_len + seq.num_steps - 1) // page_size)
        if len(seq.page_ids) < ahead:
            raise ValueError(
                f"request {seq.request_id!r}: {seq.num_steps} decode steps need {ahead} pages of "
                f"{page_size}, page_ids has {len(seq.page_ids)}"
            )
        return min(len(seq.page_ids), -(-(seq.kv_len + decode_steps - 1) // page_size))
    return needed


def _pack_model_inputs(
    seqs, bucket: Bucket, pages_needed, page_size: int, num_pages: int, vocab_size: int
) -> StepInputs:
    tokens, rows, pages = bucket
    q_lens = np.array([len(s.token_ids) for s in seqs], np.int32)
    total = int(q_lens.sum())
    cu_q_lens = np.full(rows + 1, total, np.int32)
    cu_q_lens[0] = 0
    cu_q_lens[1 : len(seqs) + 1] = np.cumsum(q_lens)
    page_table = np.zeros((rows, pages), np.int32)
    kv_lens = np.zeros(rows, np.int32)
    positions = np.zeros(tokens, np.int32)
    slot_mapping = np.zeros(tokens, np.int32)  # padding rows -> slot 0 of the sink page 0
    token_ids = np.zeros(tokens, np.int32)
    new_tokens = np.concatenate([np.asarray(s.token_ids, np.int64) for s in seqs])
    new_tokens[new_tokens == PENDING_TOKEN] = 0  # fed on the device (pending_rows)
    _check_range(new_tokens, vocab_size, "token ids")
    token_ids[:total] = new_tokens
    for b, (seq, needed) in enumerate(zip(seqs, pages_needed)):
        row_pages = np.asarray(seq.page_ids[:needed], np.int64)
        if row_pages.min() < 1 or row_pages.max() >= num_pages:
            raise ValueError(
                f"request {seq.request_id!r}: page ids must be in [1, {num_pages}) "
                f"(page 0 is the padding sink), got {row_pages.min()}..{row_pages.max()}"
            )
        page_table[b, :needed] = row_pages
        kv_lens[b] = seq.kv_len
        start, end = cu_q_lens[b], cu_q_lens[b + 1]
        seq_positions = np.arange(seq.start_pos, seq.kv_len, dtype=np.int64)
        positions[start:end] = seq_positions
        slot_mapping[start:end] = row_pages[seq_positions // page_size] * page_size + seq_positions % page_size
    logits_indices = np.zeros(rows, np.int32)
    logits_indices[: len(seqs)] = cu_q_lens[1 : len(seqs) + 1] - 1
    return StepInputs(
        token_ids=token_ids,
        positions=positions,
        slot_mapping=slot_mapping,
        page_table=page_table,
        kv_lens=kv_lens,
        cu_q_lens=cu_q_lens,
        num_seqs=np.array(len(seqs), np.int32),
        logits_indices=logits_indices,
    )


def _pack_knobs(seqs, rows: int) -> dict:
    """SamplingInputs fields (except the penalty counts) as [rows] arrays, neutral on padding rows."""
    neutral = SamplingArrays()
    columns = {  # the wire dtypes (field_ranges bounds requests to them)
        "temperature": WIRE_FLOAT,
        "top_k": WIRE_INT,
        "top_p": WIRE_FLOAT,
        "min_p": WIRE_FLOAT,
        "presence_penalty": WIRE_FLOAT,
        "frequency_penalty": WIRE_FLOAT,
        "repetition_penalty": WIRE_FLOAT,
        "num_logprobs": WIRE_INT,
    }
    knobs = {}
    for name, dtype in columns.items():
        values = [getattr(s.sampling, name) for s in seqs]
        knobs[name] = np.array(values + [getattr(neutral, name)] * (rows - len(seqs)), dtype)
    seeds = [s.sampling.seed % SEED_MODULUS for s in seqs]
    knobs["seed"] = np.array(seeds + [0] * (rows - len(seqs)), WIRE_SEED)
    knobs["rng_step"] = np.array([s.rng_step for s in seqs] + [0] * (rows - len(seqs)), WIRE_INT)
    return knobs


_KNOB_FIELDS = ("temperature", "top_k", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty")


def _check_sampling(seq: SequenceWork, max_logprobs: int) -> None:
    """The knobs against field_ranges.FIELD_RANGES: a value the wire cannot carry is this request's error."""
    p = seq.sampling
    problems = [
        f"{name}={getattr(p, name)!r} (need {FIELD_RANGES[name].describe()})"
        for name in _KNOB_FIELDS
        if not FIELD_RANGES[name].holds(getattr(p, name))
    ]
    if not 0 <= p.num_logprobs <= max_logprobs:
        problems.append(f"num_logprobs={p.num_logprobs} (need 0..{max_logprobs})")
    if seq.rng_step < 0:
        problems.append(f"rng_step={seq.rng_step} (need >= 0)")
    if problems:
        raise ValueError(f"request {seq.request_id!r}: invalid sampling: {', '.join(problems)}")


def _check_range(ids: np.ndarray, vocab_size: int, what: str) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"{what} must be in [0, {vocab_size}), got {ids.min()}..{ids.max()}")


def _check_unique_ids(seqs) -> None:
    ids = [s.request_id for s in seqs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"a StepPlan holds each request at most once, got duplicates in {ids}")
