"""Per-sequence grammar state on the host (llguidance matchers) and the bitmask each step's rows carry.

Contract:
  compiler = GrammarCompiler(tokenizer)    a trellis Tokenizer; llguidance loads on the first matcher
  compiler.matcher(structured) -> SequenceGrammar   ValueError if the grammar does not compile
  rows = GrammarRows()                     the engine's matchers, keyed by scheduler sequence id
  rows.add(seq_id, matcher) / rows.drop(seq_id)
  rows.attach(plan) -> plan                every sample row of a constrained sequence gets its `bitmask`
  rows.advance(seq_id, token_id) -> bool   consume the sampled token; True when the grammar is complete
  rows.prefetch()                          start computing the next masks on a worker thread

The LLTokenizer is built from the tokenizer.json text the project already loads (Tokenizer.hf_tokenizer),
with every end-of-turn id as EOS, so a complete grammar allows exactly those to end the output.
Overlap: `prefetch()` (called right after the tokens of a step are consumed) hands the masks of every
live constrained sequence to one worker thread; llguidance computes masks without the GIL, so they are
computed while the engine hands out deltas and schedules the next step; `attach` waits for any that
is not ready yet. A mask stays valid until its matcher consumes a token, which only happens after the
step that used it.
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from trellis_jax.engine.structured import StructuredOutput
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
        from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

        mask = allocate_token_bitmask(1, self.vocab_size)
        fill_next_token_bitmask(self.matcher, mask)
        return mask[0]


class GrammarRows:
    def __init__(self) -> None:
        self._matchers: dict[str, SequenceGrammar] = {}
        self._masks: dict[str, Future] = {}
        self._pool: ThreadPoolExecutor | None = None

    def __contains__(self, seq_id: str) -> bool:
        return seq_id in self._matchers

    def __len__(self) -> int:
        return len(self._matchers)

    def add(self, seq_id: str, matcher: SequenceGrammar) -> None:
        self._matchers[seq_id] = matcher

    def drop(self, seq_id: str) -> None:
        self._matchers.pop(seq_id, None)
        self._masks.pop(seq_id, None)

    def attach(self, plan: StepPlan) -> StepPlan:
        """The plan with `bitmask` set on the sample rows of constrained sequences (unchanged if none)."""
        if not self._matchers:
            return plan
        rows = [
            dataclasses.replace(w, bitmask=self._mask(w.request_id)) if w.sample and w.request_id in self else w
            for w in plan.sequences
        ]
        return dataclasses.replace(plan, sequences=rows)

    def advance(self, seq_id: str, token_id: int) -> bool:
        """Consume the token; True when the grammar is complete (the sequence ends with "stop")."""
        matcher = self._matchers.get(seq_id)
        if matcher is None:
            return False
        pending = self._masks.pop(seq_id, None)  # computed for the state before this token
        if pending is not None:
            pending.result()  # never advance a matcher the worker is still reading
        if not matcher.matcher.consume_token(token_id):
            error = matcher.matcher.get_error()
            raise GrammarError(f"sequence {seq_id!r}: token {token_id} breaks its grammar: {error}")
        return matcher.matcher.is_stopped()

    def prefetch(self) -> None:
        """Start the next mask of every constrained sequence that has none on the worker thread."""
        missing = [s for s in self._matchers if s not in self._masks]
        if not missing:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="grammar-masks")
        for seq_id in missing:
            self._masks[seq_id] = self._pool.submit(self._matchers[seq_id].mask)

    def _mask(self, seq_id: str) -> np.ndarray:
        future = self._masks.get(seq_id)
        if future is None:
            future = Future()
            future.set_result(self._matchers[seq_id].mask())
            self._masks[seq_id] = future
        return future.result()
