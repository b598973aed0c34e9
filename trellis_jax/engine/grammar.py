"""Per-sequence grammar state on the host (llguidance matchers) and the bitmask each step's rows carry.

Contract:
  compiler = GrammarCompiler(tokenizer)    a trellis Tokenizer; llguidance loads on the first matcher
  compiler.matcher(structured) -> SequenceGrammar   ValueError if the grammar does not compile
  rows = GrammarRows(overlap=True)         the engine's matchers, keyed by scheduler sequence id
  rows.add(seq_id, matcher) / rows.drop(seq_id)
  rows.attach(plan) -> plan                every sample row of a constrained sequence gets its `bitmask`
  rows.advance(seq_id, token_id) -> bool   consume the sampled token; True when the grammar is complete
  rows.prefetch()                          start computing the next masks on a worker thread

The LLTokenizer is built from the tokenizer.json text the project already loads (Tokenizer.hf_tokenizer),
with every end-of-turn id as EOS, so a complete grammar allows exactly those to end the output.
Masks of several sequences are computed in one llguidance call (`fill_next_token_bitmask_par`: its own
threads, without the GIL). Overlap: `prefetch()` (called right after a step's tokens are consumed) runs
that call on a worker thread for every live constrained sequence, while the engine hands out deltas and
schedules the next step; `attach` collects it and computes inline whatever is still missing (a sequence
added since). A mask stays valid until its matcher consumes a token, and `advance` collects a running
prefetch before it lets a matcher move. `overlap=False`: masks are computed inline in `attach`.
Measured cost: docs/benchmarks/structured-outputs.md.
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from trellis_jax.engine.structured import StructuredOutput
from trellis_jax.scheduler.scheduler import DRAFT_MARK, draft_row_id
from trellis_jax.step_plan import StepPlan


class GrammarError(ValueError):
    """A sampled token the grammar rejects (only possible if the mask was not applied)."""


class GrammarCompiler:
    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self._lltokenizer = None
        self._lock = threading.Lock()

    def lltokenizer(self):
        with self._lock:
            if self._lltokenizer is None:
                import llguidance

                tok = self._tokenizer
                self._lltokenizer = llguidance.LLTokenizer(
                    tok.hf_tokenizer.to_str(), n_vocab=tok.vocab_size, eos_token=list(tok.eos_token_ids)
                )
            return self._lltokenizer

    def matcher(self, structured: StructuredOutput) -> SequenceGrammar:
        import llguidance

        tokenizer = self.lltokenizer()
        matcher = llguidance.LLMatcher(tokenizer, structured.grammar(), log_level=0)
        if matcher.is_error():
            raise ValueError(f"unsupported {structured.kind}: {matcher.get_error().strip()}")
        return SequenceGrammar(matcher, tokenizer.vocab_size)


class SequenceGrammar:
    """One sequence's llguidance matcher. `copy()` gives an independent one in the same state (n > 1)."""

    def __init__(self, matcher, vocab_size: int) -> None:
        self.matcher, self.vocab_size = matcher, vocab_size

    def copy(self) -> SequenceGrammar:
        return SequenceGrammar(self.matcher.deep_copy(), self.vocab_size)

    def mask(self) -> np.ndarray:
        """[ceil(tokenizer vocab / 32)] int32: the tokens allowed next (llguidance's bit layout)."""
        return _masks({"": self})[""]


class GrammarRows:
    def __init__(self, overlap: bool = True) -> None:
        self.overlap = overlap
        self._matchers: dict[str, SequenceGrammar] = {}
        self._ready: dict[str, np.ndarray] = {}  # seq id -> the mask of its matcher's current state
        self._pending: Future | None = None  # a prefetch: {seq id: mask}
        self._pool: ThreadPoolExecutor | None = None

    def __contains__(self, seq_id: str) -> bool:
        return seq_id in self._matchers

    def __len__(self) -> int:
        return len(self._matchers)

    def add(self, seq_id: str, matcher: SequenceGrammar) -> None:
        self._matchers[seq_id] = matcher

    def drop(self, seq_id: str) -> None:
        self._matchers.pop(seq_id, None)
        self._ready.pop(seq_id, None)

    def attach(self, plan: StepPlan) -> StepPlan:
        """The plan with `bitmask` set on the sample rows of constrained sequences (unchanged if none).

        A prompt-lookup draft row i of a constrained sequence gets the mask of the state after guesses
        0..i (computed by advancing the matcher through them and rolling it back). Past a guess the grammar
        rejects, rows keep an all-ones mask: the scheduler never accepts them, since the token sampled
        before them (under a mask) cannot equal that guess."""
        if not self._matchers:  # every step calls this: no per-row work when no grammar is live
            return plan
        wanted = [w.request_id for w in plan.sequences if w.sample and _owner(w.request_id) in self._matchers]
        if not wanted:
            return plan
        self._collect_prefetch()
        guesses: dict[str, list[int]] = {}
        for w in plan.sequences:
            if DRAFT_MARK in w.request_id and _owner(w.request_id) in self._matchers:
                guesses.setdefault(_owner(w.request_id), []).append(w.token_ids[0])
        masks = _draft_masks({s: (self._matchers[s], g) for s, g in guesses.items()}) if guesses else {}
        missing = [s for s in wanted if s not in self._ready and s not in masks]
        if missing:
            self._ready.update(_masks({s: self._matchers[s] for s in missing}))
        masks = {**self._ready, **masks}
        rows = [
            dataclasses.replace(w, bitmask=masks[w.request_id]) if w.request_id in masks else w for w in plan.sequences
        ]
        return dataclasses.replace(plan, sequences=rows)

    def advance(self, seq_id: str, token_id: int) -> bool:
        """Consume the token; True when the grammar is complete (the sequence ends with "stop")."""
        grammar = self._matchers.get(seq_id)
        if grammar is None:
            return False
        self._collect_prefetch()  # never advance a matcher the worker is still reading
        self._ready.pop(seq_id, None)  # computed for the state before this token
        if not grammar.matcher.consume_token(token_id):
            error = grammar.matcher.get_error()
            raise GrammarError(f"sequence {seq_id!r}: token {token_id} breaks its grammar: {error}")
        return grammar.matcher.is_stopped()

    def prefetch(self) -> None:
        """With `overlap`, start the masks of every live constrained sequence that has none on the worker."""
        missing = {s: g for s, g in self._matchers.items() if s not in self._ready}
        if not (self.overlap and missing) or self._pending is not None:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="grammar-masks")
        self._pending = self._pool.submit(_masks, missing)

    def _collect_prefetch(self) -> None:
        if self._pending is not None:
            done, self._pending = self._pending.result(), None
            self._ready.update({s: mask for s, mask in done.items() if s in self._matchers})


def _owner(row_id: str) -> str:
    """The sequence a plan row belongs to (a draft row's id is "<sequence id>\\x00draft<i>")."""
    return row_id.split(DRAFT_MARK)[0]


_EXECUTOR = None


def _executor():
    global _EXECUTOR
    if _EXECUTOR is None:
        import llguidance

        _EXECUTOR = llguidance.LLExecutor()
    return _EXECUTOR


def _masks(grammars: dict[str, SequenceGrammar]) -> dict[str, np.ndarray]:
    """The next-token masks of several matchers in one llguidance call (its threads, without the GIL)."""
    from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask_par

    ids = list(grammars)
    masks = allocate_token_bitmask(len(ids), next(iter(grammars.values())).vocab_size)
    fill_next_token_bitmask_par(_executor(), [(grammars[s].matcher, i) for i, s in enumerate(ids)], masks)
    return {s: masks[i] for i, s in enumerate(ids)}


def _draft_masks(chains: dict[str, tuple[SequenceGrammar, list[int]]]) -> dict[str, np.ndarray]:
    """Per sequence with guesses: its own row's mask and each draft row's (after guesses 0..i), one call."""
    from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask_par_with_draft_tokens

    entries, row_ids = [], []
    for seq_id, (grammar, guesses) in chains.items():
        entries.append((grammar.matcher, len(row_ids), list(guesses)))
        row_ids += [seq_id] + [draft_row_id(seq_id, i) for i in range(len(guesses))]
    masks = allocate_token_bitmask(len(row_ids), next(iter(chains.values()))[0].vocab_size)  # all ones
    fill_next_token_bitmask_par_with_draft_tokens(_executor(), entries, masks)
    return {row: masks[i] for i, row in enumerate(row_ids)}
