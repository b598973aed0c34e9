"""Scheduler: continuous batching with chunked prefill over the radix cache (host only, no jax).

One step: `schedule() -> StepPlan`, the runner computes it, `commit(plan, outputs) -> [RequestEvent]`.

schedule():
  1. Running requests, decodes first, then prefill continuations (oldest first within each), under
     the per-step token budget: a decode takes 1 token, a prefill chunk what is left, so a long prompt
     never stalls the running decodes. Pages are grown as needed; when the pool (free + evictable) is
     short, the youngest running request of the lowest priority (largest `priority` value; all equal
     unless the caller sets them) is preempted (recompute: its private pages freed, its tree
     pages unlocked but kept, it goes back to waiting and later re-matches them).
  2. If nothing was preempted, waiting requests in policy order are admitted while budget, sequence
     slots and pages allow (admission.py); one may be deferred a step for a page another request is
     computing, or get a cached sibling page's first positions copied (`StepPlan.page_copies`).
  3. With `num_lookup_tokens`, greedy decodes without penalties get prompt-lookup guesses as extra
     one-token draft rows (drafts.py).
  4. With `decode_steps` k > 1, a step of one-token decodes only becomes a multi-step plan
     (StepPlan.decode_steps = k) whose rows each keep up to k tokens (multistep.py).
commit(): advances computed lengths, publishes every newly filled page to the tree, appends sampled
  tokens, applies stop token ids / max_tokens / the context cap, releases finished requests; a decode's
  accepted guesses (drafts.py) and a multi-step row's later tokens (multistep.py) are kept in order, and
  KV beyond the kept tokens is never published and is overwritten by later steps.
A request that cannot fit alone in the pool finishes with "length"; none ever leaks a page.

Overlapped loop (engine/engine.py): `commit` split in two, one step apart, `advance(plan)` and
`resolve(pending, outputs)`, with `must_sync()` saying when a step cannot overlap (overlap.py).
Lower tiers (reload.py): with a page store attached (`attach_store`), the cache demotes what it evicts, and
admission reloads demoted pages when the cost model says that beats recomputing; after each schedule(),
`take_page_moves()` says which pages the engine saves to the store and loads before the step.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from trellis_jax.cache import RadixCache
from trellis_jax.scheduler import admission, drafts, multistep, overlap
from trellis_jax.scheduler.config import SchedulerConfig
from trellis_jax.scheduler.drafts import DRAFT_MARK, draft_row_id
from trellis_jax.scheduler.inflight import InflightPrefixes
from trellis_jax.scheduler.kv_manager import KVManager, pages_for
from trellis_jax.scheduler.policy import make_policy
from trellis_jax.scheduler.reload import PageMoves, ReloadCost, Reloader
from trellis_jax.scheduler.request import Request, RequestEvent, RequestStatus
from trellis_jax.scheduler.sampling_needs import penalized
from trellis_jax.scheduler.stats import SchedulerStats, StepBuilder
from trellis_jax.step_plan import SamplingArrays, SequenceWork, StepOutputs, StepPlan

__all__ = [
    "DRAFT_MARK",
    "RequestRejected",
    "Scheduler",
    "draft_row_id",
]  # the draft-row names: engine and tests import them here


class RequestRejected(ValueError):
    """The request can never run here (too long for the context cap or the KV pool)."""


class Scheduler:
    def __init__(self, config: SchedulerConfig, cache: RadixCache) -> None:
        if cache.page_size != config.page_size:
            raise ValueError(f"cache page_size {cache.page_size} != scheduler page_size {config.page_size}")
        if cache.enabled != config.enable_prefix_cache:
            raise ValueError(f"cache enabled={cache.enabled} but enable_prefix_cache={config.enable_prefix_cache}")
        self.config = config
        self.kv = KVManager(cache)
        self.policy = make_policy(config.schedule_policy, page_size=config.page_size, lpm_window=config.lpm_window)
        self.inflight = InflightPrefixes(config.page_size)
        self.waiting: dict[str, Request] = {}
        self.running: list[Request] = []
        self.requests: dict[str, Request] = {}
        self.stats = SchedulerStats()
        self._events: list[RequestEvent] = []
        self._arrivals = itertools.count()

    # ---- requests ---------------------------------------------------------------------------------
    def add_request(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling: SamplingArrays,
        *,
        max_tokens: int | None = None,
        stop_token_ids: Iterable[int] = (),
        namespace: str = "",
        priority: int = 0,
    ) -> Request:
        """Queue a request; RequestRejected if it can never run, ValueError on a duplicate id."""
        if request_id in self.requests:
            raise ValueError(f"request id {request_id!r} is already in flight")
        if "\x00" in request_id:
            raise ValueError(f"request id {request_id!r} contains a NUL character")
        self.check_fits(request_id, prompt_token_ids)
        request = Request(
            request_id,
            list(prompt_token_ids),
            sampling,
            max_tokens,
            frozenset(stop_token_ids),
            namespace or "",
            priority,
            next(self._arrivals),
        )
        self.requests[request_id] = request
        self.waiting[request_id] = request
        return request

    def check_fits(self, request_id: str, prompt: list[int]) -> None:
        """RequestRejected if this prompt could never run (reads only the config: safe from any thread)."""
        if not prompt:
            raise RequestRejected(f"request {request_id!r}: empty prompt")
        if len(prompt) >= self.config.max_model_len:
            raise RequestRejected(
                f"request {request_id!r}: prompt of {len(prompt)} tokens leaves no room under "
                f"the context length cap of {self.config.max_model_len}"
            )
        needed = pages_for(len(prompt) + 1, self.config.page_size)
        if needed > self.kv.num_usable_pages:
            raise RequestRejected(
                f"request {request_id!r}: needs {needed} KV pages, the pool has {self.kv.num_usable_pages}"
            )

    def finish(self, request_id: str, reason: str = "abort") -> bool:
        """End a request at any stage (abort, a stop string); frees its pages. False if unknown/finished."""
        request = self.requests.get(request_id)
        if request is None:
            return False
        self._finish(request, reason)
        return True

    def abort(self, request_id: str) -> bool:
        return self.finish(request_id, "abort")

    def fail(self, request_id: str) -> bool:
        """End a request whose share of a step could not run (engine/isolation.py): an abort whose last,
        partly filled page never enters the tree, as its positions may never have been written (a page
        copy counted at admission that the failed step did not make). False if unknown/finished."""
        request = self.requests.get(request_id)
        if request is None:
            return False
        self._finish(request, "abort", keep_tail=False)
        return True

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    def attach_store(self, store, cost: ReloadCost) -> Reloader:
        """Keep evicted pages in `store` (a kvstore PageStore) and reload them when `cost` says so (reload.py);
        the engine carries each step's page moves out (`take_page_moves`). Before the first step."""
        self.kv.reloader = Reloader(self.kv.cache, store, cost)
        return self.kv.reloader

    def take_page_moves(self) -> PageMoves | None:
        """After schedule(): the pages to save to the store and to load before the step (None: no store)."""
        return None if self.kv.reloader is None else self.kv.reloader.take_moves()

    def check_integrity(self) -> None:
        """The prefix cache's invariants (RadixCache.check_integrity); IntegrityError if one is broken."""
        self.kv.cache.check_integrity()

    def flush_cache(self, namespace: str | None = None) -> int:
        """Evict the cached pages no request holds, of every namespace (None) or of one tenant's namespace
        and those nested under it; integrity is checked after. Returns the pages freed (KVManager.flush)."""
        return self.kv.flush(namespace)

    # ---- step -------------------------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        step = StepBuilder(self.config.max_num_batched_tokens)
        decodes = [r for r in self.running if not r.is_prefilling]
        prefills = [r for r in self.running if r.is_prefilling]
        for request in decodes + prefills:
            if request.status is not RequestStatus.RUNNING:
                continue  # preempted or finished earlier in this loop
            if request.num_pending and self._ends_by_length(request):
                continue  # its pending token ends it whatever its value: no row past the caps
            n = min(request.num_to_compute, step.budget)
            if n > 0 and self._grow(request, request.num_computed + n, step):
                step.add(self._work(request, n), self._prefill_tokens(request, n))
        if not step.preempted:
            admission.admit(self, step)
        if self.config.num_lookup_tokens:
            drafts.add_drafts(self, step)
        copies = [r.page_copy for r in self.running if r.page_copy is not None]  # admitted in this step
        sequences, steps = step.sequences(), 1
        if multistep.multi_step_allowed(self, sequences, step, copies):
            sequences, steps = [multistep.multi_step_work(self, work) for work in sequences], self.config.decode_steps
        self.stats.observe_pages(self.kv.num_usable_pages - self.kv.num_available_pages)
        return StepPlan(sequences, copies, decode_steps=steps)

    def commit(self, plan: StepPlan, outputs: StepOutputs) -> list[RequestEvent]:
        events, self._events = self._events, []
        for request in self.running:
            self.kv.copy_done(request)  # the step copied every pending page (all were admitted in it)
        draft_rows = drafts.drafts_by_owner(plan)
        for work in plan.sequences:
            request = self.requests.get(work.request_id)
            if request is None or request.status is not RequestStatus.RUNNING or request.num_computed != work.start_pos:
                continue  # finished or preempted since the plan was made (draft rows name no request)
            self._advance(request, work)
            if work.sample:
                events.append(self._append_token(request, outputs, work.request_id))
                if plan.decode_steps > 1:
                    events += multistep.accept_more(self, request, work, outputs)
                if work.request_id in draft_rows:
                    events += drafts.accept_drafts(self, request, draft_rows[work.request_id], outputs)
        return events

    # ---- overlapped loop: commit in two halves, one step apart (overlap.py) -------------------------
    def must_sync(self, plan: StepPlan | None = None) -> bool:
        """Whether a step cannot overlap the previous one's read-back. Without `plan`: the next schedule needs
        every sampled token on the host (a running request's next row depends on its last token's value).
        With `plan`: that plan must be committed before the next schedule (it holds prompt-lookup drafts,
        whose acceptance moves computed lengths by amounts only the tokens tell, or a grammar row, whose
        matcher must see its token before the next mask)."""
        return overlap.must_sync(self, plan)

    def advance(self, plan: StepPlan) -> list[tuple[str, Request]]:
        """The first half of commit, right after `plan` was dispatched: every row's KV counts as computed
        (the device runs steps in order), and each sampled row appends a PENDING_TOKEN placeholder.
        Returns what `resolve` takes: (row id, request) per placeholder, the request held by identity (an
        id aborted and reused meanwhile names another request)."""
        return overlap.advance(self, plan)

    def resolve(self, pending: list[tuple[str, Request]] | None, outputs: StepOutputs) -> list[RequestEvent]:
        """The second half, once an advanced plan's tokens are on the host (`pending`: what its advance
        returned; None: no step in flight, only the events schedule() queued). Fills each request's oldest
        placeholder, applies stop token ids, max_tokens and the context cap, publishes the pages that
        became known."""
        return overlap.resolve(self, pending, outputs)

    def _advance(self, request: Request, work: SequenceWork) -> None:
        request.num_computed += len(work.token_ids)
        in_prompt = max(0, min(request.num_computed, request.num_prompt_tokens) - work.start_pos)
        self.stats.observe_computed(in_prompt, len(work.token_ids) - in_prompt)
        if self.kv.prefix_cache_enabled:
            self.inflight.mark_computed(request, self.kv.publish(request))

    def _append_token(self, request: Request, outputs: StepOutputs, row_id: str) -> RequestEvent:
        """Append the token sampled for plan row `row_id` (the request's own row or one of its draft rows)."""
        if row_id not in outputs.tokens:
            raise ValueError(f"runner returned no token for row {row_id!r} (sample=True)")
        return self._append(request, outputs.tokens[row_id])

    def _append(self, request: Request, token) -> RequestEvent:
        request.token_ids.append(token.token_id)
        reason = self._stop_reason(request, token.token_id)
        if reason is not None:
            self._finish(request, reason, emit=False)
        return RequestEvent(request.request_id, token, reason, request.num_cached_tokens or 0)

    def _stop_reason(self, request: Request, token_id: int) -> str | None:
        """Why `request` ends with `token_id`, its last known token (placeholders after it do not count)."""
        if token_id in request.stop_token_ids:
            return "stop"
        known = request.num_known_tokens
        if request.max_tokens is not None and known - request.num_prompt_tokens >= request.max_tokens:
            return "length"
        if known >= self.config.max_model_len:
            return "length"
        return None

    def _ends_by_length(self, request: Request) -> bool:
        """Its tokens, placeholders included, already reach max_tokens or the context cap."""
        if request.max_tokens is not None and request.num_output_tokens >= request.max_tokens:
            return True
        return len(request.token_ids) >= self.config.max_model_len

    # ---- admission (admission.py) -----------------------------------------------------------------
    @staticmethod
    def _prefill_tokens(request: Request, n: int) -> int:
        """The next `n` tokens `request` computes as prefill work (a decode's one token is not)."""
        return n if request.is_prefilling else 0

    def _pages_owed_to_prefills(self) -> int:
        """Pages running prefills will still allocate to finish their prompts."""
        ps = self.config.page_size
        return sum(max(0, pages_for(len(r.token_ids), ps) - len(r.page_ids)) for r in self.running if r.is_prefilling)

    # ---- memory pressure --------------------------------------------------------------------------
    def _grow(self, request: Request, kv_len: int, step: StepBuilder) -> bool:
        """Pages for kv_len positions, preempting (lowest priority, then youngest first) if short."""
        while not self.kv.grow(request, kv_len):
            victim = max(self.running, key=lambda r: (r.priority, r.arrival))
            if victim is request and len(self.running) == 1:
                self._finish(request, "length", emit=True)  # alone, and the pool still cannot hold it
                return False
            self._preempt(victim, step)
            if victim is request:
                return False
        return True

    def _preempt(self, request: Request, step: StepBuilder) -> None:
        self.running.remove(request)
        self.inflight.release(request)
        self.kv.release(request)
        request.status = RequestStatus.WAITING
        request.num_preemptions += 1
        self.waiting[request.request_id] = request
        step.drop(request.request_id)
        self.stats.num_preemptions += 1

    def _finish(self, request: Request, reason: str, emit: bool = False, keep_tail: bool = True) -> None:
        if request.num_pending:  # overlapped: drop the placeholders and the in-flight step's advance
            del request.token_ids[request.num_known_tokens :]
            request.num_pending = 0
            request.num_computed = min(request.num_computed, len(request.token_ids) - 1)
        if request.status is RequestStatus.RUNNING:
            self.running.remove(request)
            self.inflight.release(request)
            self.kv.release(request, keep_tail=keep_tail)  # its last partial page may start a later prompt
        else:
            self.waiting.pop(request.request_id, None)
        request.status = RequestStatus.FINISHED
        request.finish_reason = reason
        del self.requests[request.request_id]
        if emit:
            self._events.append(RequestEvent(request.request_id, None, reason, request.num_cached_tokens or 0))

    def _work(self, request: Request, n: int) -> SequenceWork:
        start = request.num_computed
        s = request.sampling
        has_penalties = penalized(s)
        return SequenceWork(
            request_id=request.request_id,
            token_ids=request.token_ids[start : start + n],
            start_pos=start,
            page_ids=request.page_ids[: pages_for(start + n, self.config.page_size)],
            sample=start + n == len(request.token_ids),
            sampling=s,
            rng_step=request.num_output_tokens,
            penalty_context=request.output_token_ids if has_penalties else [],
            prompt_token_ids=list(request.prompt_token_ids) if s.repetition_penalty != 1.0 else [],
        )
