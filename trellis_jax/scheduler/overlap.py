"""The overlapped loop's commit in two halves, one step apart (host only, no jax).

`advance(plan)` right after the plan is dispatched: computed lengths move on, pages whose tokens are all known
are published, and each sampled row appends a PENDING_TOKEN placeholder (the runner feeds the real token to the
next step on the device). `resolve(pending, outputs)` once that step's tokens are read back, after the next plan
was dispatched: placeholders are filled in order, stop conditions apply, newly known pages are published. A
request that stops at step n was already scheduled into step n+1: that row's token is never emitted, and
`Scheduler._finish` rolls its state back to the stop token (pages the in-flight step still writes may be freed
and handed out again: the device runs steps in order, so a later step's writes land after it). A running request
certain to end by length once its pending token arrives is not scheduled again. `must_sync()` says when a step
cannot overlap: a row needs its last token's value on the host (prompt-lookup guesses, penalty counts, grammar
masks), or the plan holds draft rows or is multi-step; the engine then resolves first and commits synchronously.

Functions over a Scheduler (scheduler.py), which owns the requests, pages and stats they read and move; its
public `advance`, `resolve` and `must_sync` call these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trellis_jax.scheduler.drafts import DRAFT_MARK
from trellis_jax.scheduler.request import Request, RequestEvent, RequestStatus
from trellis_jax.scheduler.sampling_needs import penalized, plain_greedy
from trellis_jax.step_plan import PENDING_TOKEN, StepOutputs, StepPlan

if TYPE_CHECKING:
    from trellis_jax.scheduler.scheduler import Scheduler


def must_sync(sched: Scheduler, plan: StepPlan | None = None) -> bool:
    """See Scheduler.must_sync."""
    if plan is not None:
        drafts_or_grammar = any(DRAFT_MARK in work.request_id or work.sampling.structured for work in plan.sequences)
        return drafts_or_grammar or plan.decode_steps > 1
    return any(_needs_host_token(sched, r) for r in sched.running)


def _needs_host_token(sched: Scheduler, request: Request) -> bool:
    """Its next row needs its last token's value: penalty counts, a grammar's mask, or prompt-lookup guesses."""
    s = request.sampling
    return penalized(s) or s.structured or (sched.config.num_lookup_tokens > 0 and plain_greedy(s))


def advance(sched: Scheduler, plan: StepPlan) -> list[tuple[str, Request]]:
    """See Scheduler.advance."""
    if must_sync(sched, plan):
        raise ValueError(
            "a plan with prompt-lookup draft rows, grammar rows or decode_steps > 1 must be committed, not advanced"
        )
    for request in sched.running:
        sched.kv.copy_done(request)
    pending = []
    for work in plan.sequences:
        request = sched.requests.get(work.request_id)
        if request is None or request.status is not RequestStatus.RUNNING or request.num_computed != work.start_pos:
            continue
        sched._advance(request, work)
        if work.sample:
            request.token_ids.append(PENDING_TOKEN)
            request.num_pending += 1
            pending.append((work.request_id, request))
    return pending


def resolve(sched: Scheduler, pending: list[tuple[str, Request]] | None, outputs: StepOutputs) -> list[RequestEvent]:
    """See Scheduler.resolve."""
    events, sched._events = sched._events, []
    for row_id, request in pending or ():
        if request.status is RequestStatus.FINISHED:
            continue  # finished (or failed) since the plan was made
        if row_id not in outputs.tokens:
            raise ValueError(f"runner returned no token for row {row_id!r} (sample=True)")
        token = outputs.tokens[row_id]
        request.token_ids[request.num_known_tokens] = token.token_id
        request.num_pending -= 1
        reason = sched._stop_reason(request, token.token_id)
        if reason is not None:
            sched._finish(request, reason)
        elif request.status is RequestStatus.RUNNING and sched.kv.prefix_cache_enabled:
            sched.inflight.mark_computed(request, sched.kv.publish(request))
        events.append(RequestEvent(request.request_id, token, reason, request.num_cached_tokens or 0))
    return events
