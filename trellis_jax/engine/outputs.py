"""What the engine hands back: finished `RequestOutput`s (offline) and `OutputDelta`s (streaming).

Finish reasons: "stop" (an EOS / stop token id / stop string), "length" (max_tokens or the context
length cap), "abort" (aborted by the caller). Token ids include a terminating stop token id; the text
never includes a stop token or a stop string.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FINISH_REASONS = ("stop", "length", "abort")


@dataclass(frozen=True)
class TokenLogprob:
    """The sampled token's logprob and, if asked for, the top-N alternatives (token id, logprob)."""

    token_id: int
    logprob: float
    top_logprobs: tuple[tuple[int, float], ...] = ()


@dataclass
class CompletionOutput:
    """One of the n completions of a request."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    num_cached_tokens: int = 0  # prompt tokens this completion found in the radix cache

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    """A request's result. The flat properties read completion 0 (the only one when n == 1)."""

    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]

    @property
    def text(self) -> str:
        return self.outputs[0].text

    @property
    def token_ids(self) -> list[int]:
        return self.outputs[0].token_ids

    @property
    def logprobs(self) -> list[TokenLogprob] | None:
        return self.outputs[0].logprobs

    @property
    def finish_reason(self) -> str | None:
        return self.outputs[0].finish_reason

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_cached_tokens(self) -> int:
        """Prompt tokens found in the cache: the fewest over the completions (the first computes them)."""
        return min(o.num_cached_tokens for o in self.outputs)

    @property
    def finished(self) -> bool:
        return all(o.finished for o in self.outputs)


@dataclass(frozen=True)
class OutputDelta:
    """What one completion produced since its previous delta (streaming).

    `text` / `token_ids` / `logprobs` are the new parts only. Text may lag tokens: it is held back
    while it could still be the start of a stop string or an incomplete UTF-8 character. The last
    delta of a completion has `finish_reason` set; `num_output_tokens` is the running total.
    """

    request_id: str
    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None
    finish_reason: str | None
    num_prompt_tokens: int
    num_cached_tokens: int
    num_output_tokens: int

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
