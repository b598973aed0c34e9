"""Prompt-lookup draft rows: planning them into a step and accepting them at commit (host only, no jax).

With `num_lookup_tokens`, while the step holds fewer than `lookup_max_step_tokens` tokens and has sequence
slots left, each greedy decode without penalties gets up to that many guessed tokens (lookup.py) as extra
one-token rows ("<id>\\x00draft<i>") at the positions after it, over the same pages (grown to cover them,
never by preempting). At commit the decode keeps its own token, then each guess while the model's token before
it equals it (and the token the model then sampled after it); the KV of the rest is never published.

Functions over a Scheduler (scheduler.py), which owns the requests, pages and stats they read and move.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trellis_jax.scheduler.kv_manager import pages_for
from trellis_jax.scheduler.lookup import NgramIndex
from trellis_jax.scheduler.request import Request, RequestEvent, RequestStatus
from trellis_jax.scheduler.sampling_needs import plain_greedy
from trellis_jax.scheduler.stats import StepBuilder
from trellis_jax.step_plan import SequenceWork, StepOutputs, StepPlan

if TYPE_CHECKING:
    from trellis_jax.scheduler.scheduler import Scheduler

DRAFT_MARK = "\x00draft"  # request ids may not contain NUL, so a draft row's id never names a request


def draft_row_id(request_id: str, index: int) -> str:
    return f"{request_id}{DRAFT_MARK}{index}"


def add_drafts(sched: Scheduler, step: StepBuilder) -> None:
    limit = sched.config.lookup_max_step_tokens
    for work in step.sequences():
        room = min(limit - step.num_tokens, sched.config.max_num_seqs - len(step), step.budget)
        if room <= 0:
            return
        request = sched.requests[work.request_id]
        guesses = _guesses(sched, request, work, room)
        if not guesses or not _grow_for_drafts(sched, request, work.kv_len + len(guesses)):
            continue
        for i, token in enumerate(guesses):
            start = work.kv_len + i
            step.add(
                SequenceWork(
                    request_id=draft_row_id(work.request_id, i),
                    token_ids=[token],
                    start_pos=start,
                    page_ids=request.page_ids[: pages_for(start + 1, sched.config.page_size)],
                    sample=True,
                    sampling=work.sampling,
                    rng_step=work.rng_step + 1 + i,
                )
            )


def _guesses(sched: Scheduler, request: Request, work: SequenceWork, room: int) -> list[int]:
    """Up to `room` guessed tokens after this decode, or [] when it may not speculate."""
    if request.num_pending or not (work.sample and len(work.token_ids) == 1 and plain_greedy(request.sampling)):
        return []
    left = sched.config.max_model_len - work.kv_len - 1  # the last guess's own sample must fit too
    if request.max_tokens is not None:
        left = min(left, request.max_tokens - request.num_output_tokens - 1)
    if min(room, left, sched.config.num_lookup_tokens) <= 0:
        return []
    if request.lookup is None:
        request.lookup = NgramIndex()
    return request.lookup.propose(request.token_ids, min(room, left, sched.config.num_lookup_tokens))


def _grow_for_drafts(sched: Scheduler, request: Request, kv_len: int) -> bool:
    """Pages for the guesses, only from what running prefills will not need (a guess never preempts)."""
    missing = pages_for(kv_len, sched.config.page_size) - len(request.page_ids)
    if missing > 0 and missing > sched.kv.num_available_pages - sched._pages_owed_to_prefills():
        return False
    return sched.kv.grow(request, kv_len)


def drafts_by_owner(plan: StepPlan) -> dict[str, list[SequenceWork]]:
    """The plan's draft rows, in plan order, under the id of the request whose decode they follow."""
    drafts: dict[str, list[SequenceWork]] = {}
    for work in plan.sequences:
        if DRAFT_MARK in work.request_id:
            drafts.setdefault(work.request_id.split(DRAFT_MARK)[0], []).append(work)
    return drafts


def accept_drafts(
    sched: Scheduler, request: Request, rows: list[SequenceWork], outputs: StepOutputs
) -> list[RequestEvent]:
    """Keep each guess (in order) while the token sampled before it equals it, and the token sampled
    after it; the first disagreement drops the rest (their KV is past num_computed)."""
    events = []
    for row in rows:
        if request.status is not RequestStatus.RUNNING or request.token_ids[-1] != row.token_ids[0]:
            break
        sched._advance(request, row)
        events.append(sched._append_token(request, outputs, row.request_id))
    sched.stats.observe_drafts(len(rows), len(events))
    return events
