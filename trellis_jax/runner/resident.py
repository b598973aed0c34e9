"""Host side of the resident step state: which decode rows the device already holds, and the small upload of a
decode step that reads them (runner/resident_view.py is the device side).

Contract:
  slots = ResidentSlots(num_slots, max_pages, placement=None, enabled=True)
  slots.prepare(plan, pack_rows, buckets, *, page_size, num_pages, vocab_size, max_context_len)
      -> ResidentStep | None
      None: the runner packs the whole wire (a row that is not a one-token sampling decode, decode_steps > 1,
      page copies, disabled, or a row whose error pack() must report). `pack_rows(plan) -> PackedStep` packs the
      rows that join (the runner's pack(); it raises what pack() raises). Changes nothing until record().
  step.packed                     a PackedStep (model_inputs and knobs None) for the feed and the read-back
  slots.upload(step, feed) -> (tokens [T, 4], seqs [S, P + C])   the step's two wire buffers (seqs is a
      device-resident constant when no row joins: nothing but the tokens buffer is sent)
  slots.device_state() -> the state the next step takes; slots.record(state, step | None) after each dispatch
  slots.full_step(plan, packed, page_size) -> ResidentStep | None   for a step that packs its whole wire: the
      slot column (step.joins) that makes the device store its sampling rows, so their next decodes continue
  slots.stats   {"steps", "joined", "continued", "grown"}: resident steps so far and their rows by kind;
      "stored": rows full steps stored
The mirror holds per request id its slot, the page ids its device row holds, the kv_len and rng_step of the last
step it ran in, and its SamplingArrays. A decode row whose start_pos, rng_step, sampling and pages continue the
mirror (at most one new page) travels as (token, slot, grown page); any other row joins: its whole wire row is
sent and stored. A full step stores its sampling rows too (their next decode continues them); its other rows'
slot rows stay as they were, so the mirror stays true (such a row joins at its next decode). Rows never leave
explicitly: slots of ids a plan lacks are reused, least recently used first.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from trellis_jax.runner import wire
from trellis_jax.runner.packing import PackedStep, side_arrays
from trellis_jax.runner.resident_view import JOINED, RESIDENT, initial_state
from trellis_jax.step_plan import PENDING_TOKEN, SamplingArrays, StepPlan

_C = wire.COLUMN


@dataclass
class _Row:
    """What the device's slot row holds for one request id (the wire row of the last step it ran in)."""

    slot: int
    pages: list[int]
    kv_len: int
    rng_step: int
    sampling: SamplingArrays
    last_used: int


@dataclass(frozen=True)
class ResidentStep:
    packed: PackedStep
    tokens: np.ndarray | None  # [T, 4] int32: (token id, slot, grown page or 0, feed: filled by upload); None:
    # a full step (full_step), whose `joins` is then the [S] slot column its rows are stored in
    joins: np.ndarray | None  # [S, P + C] int32 joined rows' wire rows, None: no row joins
    rows: tuple[tuple[str, _Row], ...]  # each row's mirror entry after this step
    evicted: tuple[str, ...]  # ids whose slots this step reuses


class ResidentSlots:
    """The device-resident slot rows and their host mirror. Not thread-safe (the runner's one caller)."""

    def __init__(self, num_slots: int, max_pages: int, placement=None, enabled: bool = True) -> None:
        self.num_slots, self.max_pages, self.enabled = num_slots, max_pages, enabled
        self.placement = placement
        self.state_shape = initial_state(num_slots, max_pages).shape
        self._state: jax.Array | None = None
        self._rows: dict[str, _Row] = {}
        self._clock = 0
        self._no_joins: dict[tuple[int, int], jax.Array] = {}
        self.stats = {"steps": 0, "joined": 0, "continued": 0, "grown": 0, "stored": 0}

    @property
    def num_resident(self) -> int:
        """Request ids whose rows the device holds."""
        return len(self._rows)

    def device_state(self) -> jax.Array:
        if self._state is None:
            self._state = jax.device_put(initial_state(self.num_slots, self.max_pages), self.placement)
        return self._state

    def record(self, state: jax.Array, step: ResidentStep | None) -> None:
        """A step was dispatched: `state` is its output; a resident step's mirror entries now hold."""
        self._state = state
        if step is None:
            return
        for request_id in step.evicted:
            del self._rows[request_id]
        self._rows.update(step.rows)
        self._clock += 1
        if step.tokens is None:
            self.stats["stored"] += len(step.rows)
            return
        joined = 0 if step.joins is None else int(np.sum(step.joins[:, -wire.NUM_COLUMNS + _C["cu_q_end"]] == JOINED))
        self.stats["steps"] += 1
        self.stats["joined"] += joined
        self.stats["continued"] += len(step.rows) - joined
        self.stats["grown"] += int(np.count_nonzero(step.tokens[:, 2]))

    def prepare(self, plan: StepPlan, pack_rows, buckets, *, page_size, num_pages, vocab_size, max_context_len):
        seqs = plan.sequences
        if not self._eligible(plan):
            return None
        continuing, joining = {}, []
        for s in seqs:
            token = s.token_ids[0]
            if (token != PENDING_TOKEN and not 0 <= token < vocab_size) or not 0 <= s.start_pos < max_context_len:
                return None  # pack() says why
            grown = self._continues(s, -(-(s.start_pos + 1) // page_size), num_pages)
            if grown is None:
                joining.append(s)
            else:
                continuing[s.request_id] = grown
        joined = pack_rows(StepPlan(joining)) if joining else None  # raises what pack() raises for them
        needed = max(-(-(s.start_pos + 1) // page_size) for s in seqs)
        bucket = buckets.select(len(seqs), len(seqs), needed)
        slots, evicted = self._assign([s.request_id for s in joining], {s.request_id for s in seqs})
        tokens = np.zeros((bucket.num_tokens, 4), np.int32)
        tokens[:, 1] = self.num_slots  # padding rows: the dump row
        rows = []
        for b, s in enumerate(seqs):
            grown = continuing.get(s.request_id, 0)
            rec = self._rows.get(s.request_id)
            slot = slots[s.request_id] if s.request_id in slots else rec.slot
            token = s.token_ids[0]
            tokens[b, :3] = (0 if token == PENDING_TOKEN else token, slot, grown)
            pages = rec.pages + [grown] if grown else (rec.pages if s.request_id in continuing else None)
            if pages is None:
                pages = [int(p) for p in s.page_ids[: -(-(s.start_pos + 1) // page_size)]]
            rows.append((s.request_id, _Row(slot, pages, s.start_pos + 1, s.rng_step, s.sampling, self._clock)))
        packed = PackedStep(
            bucket,
            None,
            None,
            *side_arrays(seqs, bucket.num_seqs, vocab_size),
            [(b, s.request_id, s.sampling.num_logprobs) for b, s in enumerate(seqs)],
            [(b, s.request_id) for b, s in enumerate(seqs) if s.token_ids[0] == PENDING_TOKEN],
        )
        return ResidentStep(packed, tokens, self._joins(joined, joining, seqs, bucket), tuple(rows), evicted)

    def full_step(self, plan: StepPlan, packed: PackedStep, page_size: int) -> ResidentStep | None:
        """A step that travels as a full wire: slots for its sampling rows, whose rows the device then stores
        (so each one's next decode continues it), as `slots` for wire.encode; None: none stored (disabled, a
        multi-step plan, no sampling row)."""
        rows = [s for s in plan.sequences if s.sample]
        if not self.enabled or plan.decode_steps != 1 or not rows:
            return None
        slots, evicted = self._assign([s.request_id for s in rows], {s.request_id for s in plan.sequences})
        column = np.full(packed.bucket.num_seqs, -1, np.int32)
        where = {s.request_id: b for b, s in enumerate(plan.sequences)}
        records = []
        for s in rows:
            slot = slots[s.request_id] if s.request_id in slots else self._rows[s.request_id].slot
            column[where[s.request_id]] = slot
            pages = [int(p) for p in s.page_ids[: -(-s.kv_len // page_size)]]
            records.append((s.request_id, _Row(slot, pages, s.kv_len, s.rng_step, s.sampling, self._clock)))
        return ResidentStep(packed, None, column, tuple(records), evicted)

    def upload(self, step: ResidentStep, feed: np.ndarray):
        """The step's (tokens, seqs) arguments: feed (TokenFeed.column) filled in; seqs a device constant
        unless some row joins."""
        step.tokens[:, 3] = feed
        if step.joins is not None:
            return step.tokens, step.joins
        shape = (step.packed.bucket.num_seqs, step.packed.bucket.pages_per_seq + wire.NUM_COLUMNS)
        if shape not in self._no_joins:
            seqs = np.zeros(shape, np.int32)
            seqs[:, -wire.NUM_COLUMNS + _C["num_seqs"]] = RESIDENT
            self._no_joins[shape] = jax.device_put(seqs, self.placement)
        return step.tokens, self._no_joins[shape]

    # ---- helpers ---------------------------------------------------------------------------------------
    def _eligible(self, plan: StepPlan) -> bool:
        seqs = plan.sequences
        if not self.enabled or plan.decode_steps != 1 or plan.page_copies or not 0 < len(seqs) <= self.num_slots:
            return False
        if any(len(s.token_ids) != 1 or not s.sample for s in seqs):
            return False
        return len({s.request_id for s in seqs}) == len(seqs)

    def _continues(self, seq, needed: int, num_pages: int) -> int | None:
        """0: the device row continues into this step as it is; > 0: it does, with this page added;
        None: the row must join (no row, or the plan does not continue it)."""
        rec = self._rows.get(seq.request_id)
        if (
            rec is None
            or seq.start_pos != rec.kv_len
            or seq.rng_step != rec.rng_step + 1
            or not isinstance(seq.page_ids, list)
            or len(seq.page_ids) < needed
            or (seq.sampling is not rec.sampling and seq.sampling != rec.sampling)
        ):
            return None
        known = len(rec.pages)
        if needed not in (known, known + 1) or seq.page_ids[:known] != rec.pages:
            return None
        if needed == known:
            return 0
        page = seq.page_ids[known]
        return page if isinstance(page, int) and 0 < page < num_pages else None

    def _assign(self, joining: list[str], in_plan: set[str]) -> tuple[dict[str, int], tuple[str, ...]]:
        """Slots for the joining ids that hold none: free ones first, then those of ids the plan lacks (least
        recently used first)."""
        new = [rid for rid in joining if rid not in self._rows]
        if not new:
            return {}, ()
        taken = {rec.slot for rec in self._rows.values()}
        free = [slot for slot in range(self.num_slots) if slot not in taken]
        evicted: list[str] = []
        if len(free) < len(new):
            idle = sorted((rec.last_used, rid) for rid, rec in self._rows.items() if rid not in in_plan)
            evicted = [rid for _, rid in idle[: len(new) - len(free)]]
            free += [self._rows[rid].slot for rid in evicted]
        return dict(zip(new, free)), tuple(evicted)

    def _joins(self, joined: PackedStep | None, joining, seqs, bucket) -> np.ndarray | None:
        """[S, P + C]: each joining row's wire row (as pack() made it) at its row, flagged JOINED; None if none."""
        if joined is None:
            return None
        _, sub_seqs = wire.encode(joined.model_inputs, joined.knobs)
        sub_pages = sub_seqs.shape[1] - wire.NUM_COLUMNS
        pages = bucket.pages_per_seq
        out = np.zeros((bucket.num_seqs, pages + wire.NUM_COLUMNS), np.int32)
        where = {s.request_id: b for b, s in enumerate(seqs)}
        for i, s in enumerate(joining):
            b = where[s.request_id]
            out[b, :sub_pages] = sub_seqs[i, :sub_pages]
            out[b, pages:] = sub_seqs[i, sub_pages:]
            out[b, pages + _C["cu_q_end"]] = JOINED
        out[:, pages + _C["num_seqs"]] = RESIDENT
        return out
