"""Engine: requests in, `step()` = schedule -> runner.run -> commit, streaming deltas and final outputs out.

Single-threaded (AsyncEngine puts it on its own thread). The engine knows token ids, the scheduler and
the runner; the text side of each completion lives in completion.py. A request with n > 1 becomes n
scheduler sequences "<id>#<i>" over the same prompt: the first to run computes the prompt's pages
and publishes them to the radix tree, the others wait for them and match them (shared, not recomputed).

    add_request(id, prompt_token_ids, SamplingParams, namespace=, priority=)  (RequestRejected if it can never run)
    step() -> [OutputDelta]          every completion that produced something, finished ones last-delta'd
    abort(id) -> bool                at any stage; its streams get a final delta with finish_reason "abort"
    pop_finished() -> [RequestOutput]
    flush_cache(namespace=None) -> pages freed   (between steps; None = every namespace)
    pop_failures() -> {id: RequestFailed}   requests a step could not run (finished with "abort")

Structured outputs (SamplingParams.structured_output): each constrained sequence has a grammar state
(grammar.py), made at add_request (a grammar that does not compile is a ValueError there), advanced
with every token it emits, dropped when it finishes or is aborted. Each step's sample rows of those
sequences (their prompt-lookup draft rows included) carry the allowed-token bitmask to the sampler; a
completed grammar finishes the sequence with "stop". The masks for the next step are computed on a worker
thread right after each step.

A step whose runner raises is retried without the requests whose rows fail alone (isolation.py): only
those fail (RequestFailed, with the cause); if none can be singled out, step() raises as before.

Overlapped (`overlap=True`, with a runner that has dispatch/collect): while the device runs step n the host
schedules and dispatches step n+1, whose decode rows take step n's sampled tokens on the device
(PENDING_TOKEN); only then does it read step n's tokens and apply stop conditions, stop strings, streaming
and page release (Scheduler.advance / resolve). A sequence that ended at step n computes one token in step
n+1 that is never emitted. Where the scheduler says a step must sync (`Scheduler.must_sync`: prompt-lookup
guesses, penalties), the step in flight is read first and the new one committed at once, as without overlap.
Multi-step decode (the scheduler's decode_steps > 1): one step returns up to k tokens per row, applied as k
events in order (a stop string drops the rest); such steps are committed synchronously, overlap or not.

Lower tiers (`tiers`, a TierMover over a page store: engine/tiers.py): after each schedule() the pages the
cache demoted are queued for a copy to the host and the pages admission reloaded are written, both before the
step; the copies go into the store once the step is dispatched. `tier_stats()` reports the tiers' counters.
After a warm restart, each step (and `prefetch_turn()`, which an idle server calls) first puts the persisted
pages the background prefetch has read onto the device (engine/prefetch.py).

Several engines may take turns on one runner (tests and benchmarks share a compiled runner), but the KV
pages are the runner's: once another engine has run a step, an engine whose prefix cache or running
requests hold pages would read that engine's KV. Its next step raises RuntimeError instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from trellis_jax.engine.completion import CompletionState
from trellis_jax.engine.grammar import GrammarCompiler, GrammarError, GrammarRows
from trellis_jax.engine.isolation import run_isolated
from trellis_jax.engine.outputs import OutputDelta, RequestOutput
from trellis_jax.engine.sampling_params import SamplingParams
from trellis_jax.engine.tiers import TierMover
from trellis_jax.field_ranges import FieldRangeError, check_field
from trellis_jax.scheduler import RequestEvent, Scheduler
from trellis_jax.scheduler.scheduler import DRAFT_MARK
from trellis_jax.step_plan import StepOutputs


class RequestFailed(ValueError):
    """A request's share of a step could not be packed (its values); it alone was aborted."""

    def __init__(self, request_id: str, cause: Exception) -> None:
        super().__init__(
            f"request {request_id!r} could not run and was aborted ({type(cause).__name__}: {cause}); "
            "no other request was affected"
        )
        self.request_id, self.cause = request_id, cause


class _RequestState:
    def __init__(self, request_id: str, prompt: list[int], sampling: SamplingParams, completions) -> None:
        self.request_id = request_id
        self.prompt = prompt
        self.sampling = sampling
        self.completions: list[CompletionState] = completions

    @property
    def finished(self) -> bool:
        return all(c.finished for c in self.completions)

    def to_output(self) -> RequestOutput:
        return RequestOutput(self.request_id, self.prompt, [c.output for c in self.completions])


class Engine:
    def __init__(
        self,
        scheduler: Scheduler,
        runner,
        *,
        make_detokenizer: Callable[[bool], object],
        eos_token_ids: tuple[int, ...] = (),
        grammar: GrammarCompiler | None = None,
        overlap: bool = False,
        tiers: TierMover | None = None,
    ) -> None:
        """make_detokenizer(skip_special_tokens) -> an object with push(token_id) -> str and flush() -> str.
        `grammar` builds the matchers of requests with a structured_output (None: such requests are refused).
        `overlap`: dispatch each step before reading the previous one's tokens (needs runner.dispatch)."""
        if overlap and not hasattr(runner, "dispatch"):
            raise ValueError(f"overlap=True needs a runner with dispatch/collect, got {type(runner).__name__}")
        self.scheduler = scheduler
        self.runner = runner
        self.overlap = bool(overlap)
        self.tiers = tiers
        self._inflight: tuple | None = None  # (Scheduler.advance's pending rows, launch): tokens not read yet
        self.eos_token_ids = tuple(eos_token_ids)
        self._make_detokenizer = make_detokenizer
        self._requests: dict[str, _RequestState] = {}
        self._sequences: dict[str, tuple[_RequestState, int]] = {}  # scheduler id -> (request, index)
        self._finished: list[RequestOutput] = []
        self._pending: list[OutputDelta] = []
        self._failures: dict[str, RequestFailed] = {}
        self.num_steps = 0
        self._grammar = grammar
        self._grammar_rows = GrammarRows()  # scheduler id -> its grammar state, for constrained sequences
        self._kv_generation_after_last_run: int | None = None  # None: this engine has not run the runner yet
        self._closed = False

    def add_request(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling: SamplingParams,
        *,
        namespace: str = "",
        priority: int = 0,
    ) -> None:
        if self._closed:
            raise ValueError("the engine is closed")
        if request_id in self._requests:
            raise ValueError(f"request id {request_id!r} is already in flight")
        check_field("priority", priority)
        stop_ids = set(sampling.stop_token_ids) | (set() if sampling.ignore_eos else set(self.eos_token_ids))
        completions = [
            CompletionState(
                i, self._make_detokenizer(sampling.skip_special_tokens), sampling.stop, sampling.logprobs is not None
            )
            for i in range(sampling.n)
        ]
        state = _RequestState(request_id, list(prompt_token_ids), sampling, completions)
        seq_ids = self._sequence_ids(request_id, sampling.n)
        grammars = self._grammars_for(sampling)
        try:
            for index, seq_id in enumerate(seq_ids):
                self.scheduler.add_request(
                    seq_id,
                    state.prompt,
                    sampling.to_arrays(index),
                    max_tokens=sampling.max_tokens,
                    stop_token_ids=stop_ids,
                    namespace=namespace,
                    priority=priority,
                )
                self._sequences[seq_id] = (state, index)
                if grammars:
                    self._grammar_rows.add(seq_id, grammars[index])
        except ValueError:
            for seq_id in seq_ids:
                self._grammar_rows.drop(seq_id)
                if self._sequences.pop(seq_id, None) is not None:
                    self.scheduler.finish(seq_id, "abort")
            raise
        self._requests[request_id] = state

    def _grammars_for(self, sampling: SamplingParams) -> list:
        """One grammar state per completion (ValueError if the grammar does not compile), and the logit_bias
        ids checked against the vocabulary: both refused here, before the request is queued."""
        vocab = getattr(getattr(self.runner, "config", None), "vocab_size", None)
        bad = [token for token, _ in sampling.logit_bias if vocab is not None and token >= vocab]
        if bad:
            raise FieldRangeError(
                "logit_bias", f"logit_bias token id {bad[0]} is outside the vocabulary (size {vocab})"
            )
        if sampling.structured_output is None:
            return []
        if self._grammar is None:
            raise ValueError("this engine was built without a tokenizer for grammars: structured_output is unsupported")
        first = self._grammar.matcher(sampling.structured_output)
        return [first] + [first.copy() for _ in range(sampling.n - 1)]

    @staticmethod
    def _sequence_ids(request_id: str, n: int) -> list[str]:
        return [request_id] if n == 1 else [f"{request_id}#{i}" for i in range(n)]

    def abort(self, request_id: str) -> bool:
        return self._end(request_id, self.scheduler.abort)

    def _end(self, request_id: str, end_sequence) -> bool:
        """Finish every completion of the request with "abort"; end_sequence(scheduler id) frees its pages."""
        state = self._requests.get(request_id)
        if state is None:
            return False
        for seq_id in self._sequence_ids(request_id, state.sampling.n):
            end_sequence(seq_id)
            self._sequences.pop(seq_id, None)
            self._grammar_rows.drop(seq_id)
        for completion in state.completions:
            completion.finish("abort")
        self._collect(state, self._pending)
        return True

    def abort_all(self) -> None:
        """Abort every request and drop undelivered deltas (after a failed step: no tail page enters the
        tree, as the failed step may not have made a page copy its positions count on)."""
        for request_id in list(self._requests):
            self._end(request_id, self.scheduler.fail)
        self._pending = []
        self._finished = []
        self._failures = {}
        self._inflight = None

    def _fail_rows(self, errors: dict[str, Exception]) -> set[str]:
        """Abort the requests owning these plan rows (each failed alone), keeping the cause for their
        streams; -> the scheduler ids of every sequence ended."""
        ended = set()
        for row_id, error in errors.items():
            entry = self._sequences.get(row_id.split(DRAFT_MARK)[0])
            if entry is None:
                continue  # its request already failed through another row
            state = entry[0]
            self._failures[state.request_id] = RequestFailed(state.request_id, error)
            ended.update(self._sequence_ids(state.request_id, state.sampling.n))
            self._end(state.request_id, self.scheduler.fail)
        return ended

    def pop_failures(self) -> dict[str, RequestFailed]:
        """Requests that steps since the last call could not run (already finished with "abort")."""
        failures, self._failures = self._failures, {}
        return failures

    def flush_cache(self, namespace: str | None = None) -> int:
        """Evict every cached prefix page that no request holds (call between steps); -> pages freed.

        `namespace` None: every tenant's pages; else only that namespace's and those nested under it
        ("<ns>/...", its cache_salt splits), so one tenant's flush leaves the others' prefixes cached.
        Running requests keep their pages; the next requests start cold. For benchmarks that must not
        reuse an earlier run's prefixes, and to hand memory back after a burst."""
        return self.scheduler.flush_cache(namespace)

    def has_unfinished(self) -> bool:
        """True while a request runs or a delta (e.g. of an abort) is still to be returned by step()."""
        return bool(self._requests) or bool(self._pending) or self._inflight is not None

    def _holds_kv(self) -> bool:
        """Whether pages on the runner still mean something to this engine (its cache, or running requests)."""
        return self.scheduler.kv.prefix_cache_enabled or any(r.num_computed > 0 for r in self.scheduler.running)

    def _check_runner_is_ours(self) -> None:
        """Before a run: refuse if the runner ran for someone else since this engine's last run while this
        engine still holds pages (each run() bumps kv_generation by one)."""
        rewritten = self._kv_generation_after_last_run not in (None, self.runner.kv_generation)
        if rewritten and self._holds_kv():
            raise RuntimeError(
                "another engine has run steps on this engine's runner since its last step, "
                "overwriting KV pages this engine's cache or running requests hold; build a new "
                "engine over the runner (trellis_jax.engine.builder.build_engine) instead"
            )

    def _run(self, plan, launch=None):
        """(the plan that ran, its outputs, or its launch when `launch` is runner.dispatch): a failure
        isolation retry runs the runner more than once, so the generation this engine leaves is read after
        the runs, failed or not."""
        self._check_runner_is_ours()
        try:
            return run_isolated(self.runner, plan, self._fail_rows, launch)
        finally:
            self._kv_generation_after_last_run = self.runner.kv_generation

    def step(self) -> list[OutputDelta]:
        """One engine step; returns the deltas of every completion that progressed (or was aborted)."""
        deltas, self._pending = self._pending, []
        if not self.scheduler.has_unfinished() and self._inflight is None:
            return deltas
        self.prefetch_turn()  # before schedule(): a request matches the prefetched pages already placed
        progressed = False
        if self.overlap and self.scheduler.must_sync():
            # The next rows need the tokens in flight (penalties, lookup drafts, grammar masks): read and
            # apply them first, so the matchers have seen every token before attach() asks for masks.
            progressed = self._inflight is not None
            early = self._resolve_inflight()
            progressed = progressed or bool(early)
            self._apply_events(early, deltas)
        events = self._step_overlapped(progressed) if self.overlap else self._step_sync()
        self.num_steps += 1
        self._apply_events(events, deltas)
        self._grammar_rows.prefetch()  # the next masks, computed while the caller handles these deltas
        return deltas

    def _move_pages(self):
        """This step's page saves and loads, queued on the runner before the step (engine/tiers.py)."""
        return None if self.tiers is None else self.tiers.before_step(self.scheduler.take_page_moves())

    def close(self) -> None:
        """Stop for good (server shutdown, end of a batch job): with a page store, the cached prefixes are
        written to it and it is closed (TierMover.persist), so a restart on the same store starts warm.
        Pages of requests still running stay locked and are not written; a step still in flight needs no
        wait (the copy reads the KV after it on the device). Later calls do nothing; add_request is refused
        after."""
        if self._closed:
            return
        self._closed = True
        if self.tiers is not None:
            self.tiers.persist()

    @property
    def prefetching(self) -> bool:
        """Whether a restart's prefetch is still reading or placing pages."""
        return self.tiers is not None and self.tiers.prefetcher is not None and self.tiers.prefetcher.running

    def prefetch_turn(self) -> bool:
        """Between steps: put the persisted pages a restart's prefetch has read onto the device (TierMover);
        True while prefetch goes on (an idle server calls this until False)."""
        return self.tiers is not None and not self._closed and self.tiers.prefetch_turn()

    def wait_prefetch(self, timeout: float | None = None) -> bool:
        """Between steps: wait until the restart's prefetch is done (every planned page on the device or
        dropped); False on timeout. True at once without a prefetch."""
        return self.tiers is None or self._closed or self.tiers.wait_prefetch(timeout)

    def checkpoint(self) -> int:
        """Between steps: copy the cached prefixes a disk-backed page store lacks into it (TierMover.checkpoint),
        so a crash after this loses only newer ones; returns the pages copied (0 without such a store)."""
        return 0 if self.tiers is None or self._closed else self.tiers.checkpoint()

    def tier_stats(self) -> dict | None:
        """The lower tiers' counters and rates (TierMover.stats), None without a page store."""
        return None if self.tiers is None else self.tiers.stats()

    def _step_sync(self) -> list[RequestEvent]:
        plan = ran = self._grammar_rows.attach(self.scheduler.schedule())
        moves, start = self._move_pages(), time.perf_counter()
        if plan.is_empty:
            outputs = StepOutputs({})
        else:
            ran, outputs = self._run(plan)  # ran: the plan less the requests that failed alone
        if self.tiers is not None:
            self.tiers.after_dispatch(moves)
            self.tiers.observe_step(ran, time.perf_counter() - start)
        events = self.scheduler.commit(ran, outputs)
        if plan.is_empty and not events:
            raise RuntimeError(f"scheduler made no progress with {len(self.scheduler.requests)} requests queued")
        return events

    def _step_overlapped(self, progressed: bool = False) -> list[RequestEvent]:
        """Schedule and dispatch this step, then read the previous one (see the module docstring).
        `progressed`: step() already read a step in flight or queued events (progress, even if nothing is
        scheduled now)."""
        events: list[RequestEvent] = []
        plan = ran = self._grammar_rows.attach(self.scheduler.schedule())
        launch, was_inflight = None, self._inflight is not None or progressed
        moves = self._move_pages()
        if not plan.is_empty:
            ran, launch = self._run(plan, self.runner.dispatch)  # ran: less the requests that failed alone
        if self.tiers is not None:
            self.tiers.after_dispatch(moves)
        if ran.is_empty or self.scheduler.must_sync(ran):  # committed now, as without overlap
            events += self._resolve_inflight()
            outputs = StepOutputs({}) if launch is None else self.runner.collect(launch)
            events += self.scheduler.commit(ran, outputs)
            if plan.is_empty and not events and not was_inflight:
                raise RuntimeError(f"scheduler made no progress with {len(self.scheduler.requests)} requests queued")
            return events
        pending = self.scheduler.advance(ran)
        events += self._resolve_inflight()
        self._inflight = (pending, launch)
        return events

    def _resolve_inflight(self) -> list[RequestEvent]:
        """Read the step in flight back and resolve its placeholders (or only the queued events if none)."""
        if self._inflight is None:
            return self.scheduler.resolve(None, StepOutputs({}))
        (pending, launch), self._inflight = self._inflight, None
        return self.scheduler.resolve(pending, self.runner.collect(launch))

    def _apply_events(self, events: list[RequestEvent], deltas: list[OutputDelta]) -> None:
        touched = {}
        for event in events:
            state = self._apply(event)
            if state is not None:
                touched[state.request_id] = state
        for state in touched.values():
            self._collect(state, deltas)

    def _apply(self, event: RequestEvent) -> _RequestState | None:
        entry = self._sequences.get(event.request_id)
        if entry is None:
            return None
        state, index = entry
        completion = state.completions[index]
        completion.output.num_cached_tokens = event.num_cached_tokens
        if event.token is None:
            completion.finish(event.finish_reason or "abort")
            grammar_done = False
        else:
            try:
                grammar_done = self._grammar_rows.advance(event.request_id, event.token.token_id)
            except GrammarError as error:
                self._fail_rows({event.request_id: error})
                return None
            if completion.on_token(event.token, event.finish_reason):
                self.scheduler.finish(event.request_id, "stop")  # a stop string: the scheduler did not see it
        if grammar_done and not completion.finished:
            self.scheduler.finish(event.request_id, "stop")  # the grammar is complete: nothing more may follow
            completion.finish("stop", flush=True)
        if completion.finished:
            del self._sequences[event.request_id]
            self._grammar_rows.drop(event.request_id)
        return state

    def _collect(self, state: _RequestState, deltas: list[OutputDelta]) -> None:
        for completion in state.completions:
            delta = completion.delta(state.request_id, len(state.prompt))
            if delta is not None:
                deltas.append(delta)
        if state.finished and self._requests.pop(state.request_id, None) is not None:
            self._finished.append(state.to_output())

    def pop_finished(self) -> list[RequestOutput]:
        finished, self._finished = self._finished, []
        return finished
