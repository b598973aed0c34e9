"""One completion's text side: incremental detokenization, stop strings, and streaming deltas.

Stop strings are searched in the detokenized text, so a stop string split across tokens is found.
Streaming holds back the longest tail of the text that could still be the start of a stop string;
it is released when the next token rules the stop string out, or dropped when it completes one. A
stop token id (EOS, stop_token_ids) is kept in token_ids but never detokenized.
"""

from __future__ import annotations

from collections.abc import Sequence

from trellis_jax.engine.outputs import CompletionOutput, OutputDelta, TokenLogprob
from trellis_jax.step_plan import SampledToken


class CompletionState:
    def __init__(self, index: int, detokenizer, stop: Sequence[str], want_logprobs: bool) -> None:
        self.output = CompletionOutput(index=index, logprobs=[] if want_logprobs else None)
        self._detokenizer = detokenizer
        self._stop = tuple(stop)
        self._text = ""  # detokenized text, stop string removed once found
        self._searched = 0  # stop strings cannot start before this offset of _text
        self._emitted_text = 0
        self._emitted_tokens = 0
        self._final_sent = False

    @property
    def finished(self) -> bool:
        return self.output.finish_reason is not None

    def on_token(self, token: SampledToken, finish_reason: str | None) -> bool:
        """Record a sampled token; True if a stop string ended the completion (the caller stops it)."""
        out = self.output
        out.token_ids.append(token.token_id)
        if out.logprobs is not None:
            out.logprobs.append(TokenLogprob(token.token_id, token.logprob, tuple(token.top_logprobs)))
        hit_stop = False
        if finish_reason != "stop":  # the scheduler's "stop" means a stop token id: not part of the text
            self._text += self._detokenizer.push(token.token_id)
            hit_stop = self._find_stop_string()
            if hit_stop:
                finish_reason = "stop"
        if finish_reason is not None:
            self.finish(finish_reason)
        return hit_stop

    def finish(self, reason: str, flush: bool = False) -> None:
        """End the completion; the detokenizer's held-back bytes are kept unless a stop token or string
        ended it (`flush`: keep them anyway, e.g. when a completed grammar ended it)."""
        if self.finished:
            return
        if reason != "stop" or flush:
            self._text += self._detokenizer.flush()  # a truncated completion keeps what it decoded
        self.output.finish_reason = reason
        self.output.text = self._text

    def _find_stop_string(self) -> bool:
        best = -1
        for stop in self._stop:
            at = self._text.find(stop, self._searched)
            if at != -1 and (best == -1 or at < best):
                best = at
        if best != -1:
            self._text = self._text[:best]
            return True
        longest = max((len(s) for s in self._stop), default=1)
        self._searched = max(0, len(self._text) - longest + 1)
        return False

    def _held_back(self) -> int:
        """Length of the text tail that may still grow into a stop string."""
        for length in range(min(len(self._text), max((len(s) for s in self._stop), default=1) - 1), 0, -1):
            tail = self._text[-length:]
            if any(s.startswith(tail) for s in self._stop):
                return length
        return 0

    def delta(self, request_id: str, num_prompt_tokens: int) -> OutputDelta | None:
        """What is new since the last delta (None if nothing is)."""
        out = self.output
        text_end = len(self._text) if self.finished else len(self._text) - self._held_back()
        text_end = max(text_end, self._emitted_text)
        new_tokens = out.token_ids[self._emitted_tokens :]
        if not new_tokens and text_end == self._emitted_text and (self._final_sent or not self.finished):
            return None
        self._final_sent = self.finished
        delta = OutputDelta(
            request_id=request_id,
            index=out.index,
            text=self._text[self._emitted_text : text_end],
            token_ids=new_tokens,
            logprobs=out.logprobs[self._emitted_tokens :] if out.logprobs is not None else None,
            finish_reason=out.finish_reason,
            num_prompt_tokens=num_prompt_tokens,
            num_cached_tokens=out.num_cached_tokens,
            num_output_tokens=len(out.token_ids),
        )
        self._emitted_text, self._emitted_tokens = text_end, len(out.token_ids)
        return delta
