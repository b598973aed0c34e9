"""Prompt-lookup drafts: guess a greedy request's next tokens from its own context (host only, no jax).

Contract: `NgramIndex(max_ngram)` is fed a request's tokens (prompt + generated) with `extend`, and
`propose(tokens, k)` returns up to k tokens that followed the most recent earlier occurrence of the
context's last n tokens, trying n = max_ngram down to `min_ngram` and taking the first (longest) n that
occurred before; [] when none did. The index only grows: `extend(tokens)` adds the n-grams that end before
the last token (the last one's successor is not known yet), so each call costs O(new tokens).

Why: greedy continuations often copy spans of their context (a quoted passage, code being edited, a
transcript the agent summarises). Verifying k guessed tokens costs one step with k more rows, and on a
CPU a step of up to ~16 rows costs what a one-row step does (both are bound by reading the weights), so
every accepted guess is a token without a step of its own. Used by the scheduler's speculative decoding
(scheduler.py, `SchedulerConfig.num_lookup_tokens`).
"""

from __future__ import annotations

from collections.abc import Sequence


class NgramIndex:
    def __init__(self, max_ngram: int = 3, min_ngram: int = 1) -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self._last_end: list[dict[tuple[int, ...], int]] = [{} for _ in range(max_ngram + 1)]  # n -> gram -> end
        self._indexed = 0  # n-grams ending at positions < this are in the index

    def extend(self, tokens: Sequence[int]) -> None:
        """Index every n-gram of `tokens` that ends before its last token (tokens only ever grow)."""
        for end in range(self._indexed, len(tokens) - 1):
            for n in range(self.min_ngram, min(self.max_ngram, end + 1) + 1):
                self._last_end[n][tuple(tokens[end - n + 1 : end + 1])] = end
        self._indexed = max(self._indexed, len(tokens) - 1)

    def propose(self, tokens: Sequence[int], k: int) -> list[int]:
        """Up to k tokens that followed the latest earlier occurrence of the longest matching tail."""
        if k <= 0:
            return []
        self.extend(tokens)
        for n in range(min(self.max_ngram, len(tokens)), self.min_ngram - 1, -1):
            end = self._last_end[n].get(tuple(tokens[len(tokens) - n :]))
            if end is not None:
                return list(tokens[end + 1 : end + 1 + k])
        return []
