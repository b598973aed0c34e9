"""Admission: which waiting requests start running in this step (host only, no jax).

Waiting requests, in policy order, are admitted while budget, sequence slots and pages (free + evictable
minus what running prefills still need) allow, and (with `prefill_saturation_tokens`) while the step's prompt
tokens are below that saturation point. A request whose first uncached page another running request is
computing right now is deferred one step (inflight.py): that page enters the tree as soon as it is filled, and
the deferred request matches it then. An admitted request whose next page starts like a cached sibling page
gets those positions copied into its first private page by the step (`StepPlan.page_copies`).

Functions over a Scheduler (scheduler.py), which owns the requests, pages and stats they read and move.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from trellis_jax.scheduler.kv_manager import pages_for
from trellis_jax.scheduler.request import Request, RequestStatus
from trellis_jax.scheduler.stats import StepBuilder

if TYPE_CHECKING:
    from trellis_jax.scheduler.scheduler import Scheduler


def admit(sched: Scheduler, step: StepBuilder) -> None:
    if not sched.waiting:
        return
    saturation = sched.config.prefill_saturation_tokens
    for request in sched.policy.order(list(sched.waiting.values()), lambda r: _cached_prefix_length(sched, r)):
        if step.budget <= 0 or len(sched.running) >= sched.config.max_num_seqs:
            return
        if saturation is not None and step.prefill_tokens >= saturation:
            return
        if not _try_admit(sched, request, step):
            return


def _cached_prefix_length(sched: Scheduler, request: Request) -> int:
    if not sched.kv.prefix_cache_enabled:
        return 0
    return sched.kv.cached_prefix_length(request.token_ids, request.namespace)


def _try_admit(sched: Scheduler, request: Request, step: StepBuilder) -> bool:
    """Admit `request` if it fits; True to keep admitting others, False to stop this step."""
    total_pages = pages_for(len(request.token_ids), sched.config.page_size)
    if total_pages > sched.kv.num_usable_pages:  # grew past the pool while preempted
        sched._finish(request, "length", emit=True)
        return True
    cached = sched.kv.acquire_prefix(request)
    if sched.kv.prefix_cache_enabled and sched.inflight.blocks(request, cached):
        sched.kv.release(request)
        return True
    spare = sched.kv.num_available_pages - sched._pages_owed_to_prefills() - (total_pages - len(request.page_ids))
    if spare < 0:
        sched.kv.release(request)
        return False
    copied = sched.kv.acquire_partial_page(request, spare)  # 0 with the cache off (nothing matches)
    cached += copied
    if request.num_cached_tokens is None:  # first admission: counted with the cached prompt tokens
        sched.stats.num_partial_page_tokens += copied
    n = min(request.num_to_compute, step.budget)
    if not sched.kv.grow(request, request.num_computed + n):
        sched.kv.release(request)
        return False
    _start_running(sched, request, cached)
    step.add(sched._work(request, n), sched._prefill_tokens(request, n))
    return True


def _start_running(sched: Scheduler, request: Request, cached: int) -> None:
    del sched.waiting[request.request_id]
    sched.running.append(request)
    request.status = RequestStatus.RUNNING
    if request.num_cached_tokens is None:
        request.num_cached_tokens = cached
        sched.stats.observe_admitted(request.num_prompt_tokens, cached)
        sched.stats.queue_time_s.observe(time.monotonic() - request.queued_at)
    if sched.kv.prefix_cache_enabled:
        sched.inflight.register(request)
