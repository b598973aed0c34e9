"""Multi-step decode: when a step may run `decode_steps` iterations, each row's k, and its k-token commit
(host only, no jax).

With `decode_steps` k > 1, a step of one-token decodes only (no waiting request, no preemption, page copy or
draft row, no penalties or grammar) becomes a multi-step plan (StepPlan.decode_steps = k): each row may keep up
to k tokens (`SequenceWork.num_steps`), capped by max_tokens, the context cap and the pages it holds or can get
without preempting anyone (grown ahead here from free + evictable pages). At commit a row keeps its tokens in
order (`StepOutputs.more`) up to its num_steps or its first stop token id / length; the KV of the ones dropped
is never published.

Functions over a Scheduler (scheduler.py), which owns the requests, pages and stats they read and move.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from trellis_jax.scheduler.kv_manager import pages_for
from trellis_jax.scheduler.request import Request, RequestEvent, RequestStatus
from trellis_jax.scheduler.sampling_needs import penalized
from trellis_jax.scheduler.stats import StepBuilder
from trellis_jax.step_plan import SequenceWork, StepOutputs

if TYPE_CHECKING:
    from trellis_jax.scheduler.scheduler import Scheduler


def multi_step_allowed(sched: Scheduler, sequences: list[SequenceWork], step: StepBuilder, copies) -> bool:
    """Whether this step may run decode_steps iterations: one-token decodes only, nobody waiting (a
    waiting request would wait k steps for its prefill), nothing preempted or copied, and no row whose
    next token needs host state (penalty counts, grammar masks) or that speculates."""
    if sched.config.decode_steps == 1 or sched.waiting or step.preempted or copies or not sequences:
        return False
    for work in sequences:
        request = sched.requests.get(work.request_id)
        if request is None or len(work.token_ids) != 1 or not work.sample or request.is_prefilling:
            return False
        if penalized(work.sampling) or work.sampling.structured:
            return False
    return True


def multi_step_work(sched: Scheduler, work: SequenceWork) -> SequenceWork:
    """`work` with num_steps: up to decode_steps tokens, within max_tokens and the context cap, and
    pages grown for their positions from free + evictable pages (never preempting; else fewer steps)."""
    request = sched.requests[work.request_id]
    n = min(sched.config.decode_steps, sched.config.max_model_len - len(request.token_ids))
    if request.max_tokens is not None:
        n = min(n, request.max_tokens - request.num_output_tokens)
    n = max(1, n)
    ps = sched.config.page_size
    spare = max(0, sched.kv.num_available_pages - sched._pages_owed_to_prefills())
    n = min(n, (len(request.page_ids) + spare) * ps - work.kv_len + 1)
    if not sched.kv.grow(request, work.kv_len + n - 1):
        n = max(1, min(n, len(request.page_ids) * ps - work.kv_len + 1))
    pages = request.page_ids[: pages_for(work.kv_len + n - 1, ps)]
    return dataclasses.replace(work, page_ids=pages, num_steps=n)


def accept_more(sched: Scheduler, request: Request, work: SequenceWork, outputs: StepOutputs) -> list[RequestEvent]:
    """A multi-step row's tokens after its first, in order, while it runs and up to its num_steps: each
    one's predecessor had its KV written by the iteration that sampled it."""
    later = outputs.more.get(work.request_id, [])
    if len(later) < work.num_steps - 1:
        raise ValueError(
            f"runner returned {1 + len(later)} tokens for row {work.request_id!r}, expected {work.num_steps}"
        )
    events = []
    for token in later[: work.num_steps - 1]:
        if request.status is not RequestStatus.RUNNING:
            break
        start = request.num_computed
        sched._advance(request, SequenceWork(work.request_id, request.token_ids[start : start + 1], start, [], True))
        events.append(sched._append(request, token))
    return events
