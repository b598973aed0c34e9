"""The scheduler -> runner contract: one `StepPlan` per engine step, and `StepOutputs` back.

Pure host data (python ints / lists, no jax, no numpy required), unpadded. The runner pads it to a
compiled bucket; the scheduler never sees buckets or device arrays.
A neutral module both sides import: it imports only the standard library, so loading the runner never
loads the scheduler or the cache, and the scheduler never loads jax.

Lifecycle of a step: `Scheduler.schedule() -> StepPlan`, `Runner.run(plan) -> StepOutputs`,
`Scheduler.commit(plan, outputs)`. Overlapped (engine/engine.py): `schedule()`, `Runner.dispatch(plan)`,
`Scheduler.advance(plan) -> pending`, then the previous step's `Runner.collect(launch)` and
`Scheduler.resolve(pending, outputs)`.

`PENDING_TOKEN` in a `SequenceWork.token_ids` (only as the single token of a decode row) stands for the token
the previous dispatched step sampled for the same request id: it is still on the device, and the runner feeds
it into this step without a host round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PENDING_TOKEN = -1  # "the token the previous step sampled for this request id" (token ids are never negative)


@dataclass(frozen=True)
class SamplingArrays:
    """Per-sequence sampling knobs, all dynamic on device (a new value never recompiles).

    temperature == 0 means greedy. top_k <= 0 means off; top_p == 1 and min_p == 0 are off.
    Penalties follow the OpenAI / vLLM conventions: presence and frequency act on generated tokens,
    repetition (multiplicative, 1 = off) acts on prompt + generated tokens.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int = 0
    num_logprobs: int = 0  # top-N logprobs to return (0 = only the sampled token's logprob)
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to its logit), at most MAX_LOGIT_BIAS
    structured: bool = False  # a grammar constrains the output: the engine sets each step's SequenceWork.bitmask


@dataclass(frozen=True)
class SequenceWork:
    """One sequence's share of a step.

    Computes KV for `token_ids` at positions start_pos .. start_pos+len(token_ids)-1, writing them into
    `page_ids` (the full page-table row: covers every position < start_pos + len(token_ids)). Positions
    < start_pos are already in the pages (cached prefix or earlier chunks).
    If `sample` is true the runner samples the next token from the logits of the last new token.
    `penalty_context` are the generated token ids so far (presence/frequency), `prompt_token_ids` the prompt
    (repetition penalty also covers it); both may be empty when no penalty is active.
    `rng_step` is the number of tokens this sequence has sampled so far: with `sampling.seed`, it makes
    sampling reproducible regardless of batch composition.
    `bitmask` (sample rows of `sampling.structured` sequences; the engine sets it after schedule()): the
    tokens its grammar allows next, packed int32 words (runner/constraints.py), any int32 sequence such as a
    numpy array. Not None = this row's token must reach the host before the sequence's next mask can be
    computed (an overlapped loop falls back to a synchronous step for it).
    `num_steps` (a decode row of a multi-step plan, `StepPlan.decode_steps` > 1): how many of the plan's
    decode_steps tokens this row may keep (max_tokens, the context cap and its pages bound it); `page_ids`
    then covers the positions of those tokens too. The runner samples decode_steps tokens for every row;
    the scheduler drops those past num_steps (their KV lands in the row's own pages past what it keeps,
    or in the sink page, and is never published).
    """

    request_id: str
    token_ids: list[int]
    start_pos: int
    page_ids: list[int]
    sample: bool
    sampling: SamplingArrays = field(default_factory=SamplingArrays)
    rng_step: int = 0
    penalty_context: list[int] = field(default_factory=list)
    prompt_token_ids: list[int] = field(default_factory=list)
    bitmask: object = None
    num_steps: int = 1

    @property
    def kv_len(self) -> int:
        return self.start_pos + len(self.token_ids)


@dataclass(frozen=True)
class StepPlan:
    """All work of one step: prefill chunks and decodes mixed in one ragged batch.

    `page_copies` (src, dst): before computing, copy every position of page src into page dst (all
    layers, K and V). A newly admitted request reuses the first tokens of a cached page that way; its
    work then starts after them, and positions past them are overwritten or never read.
    `decode_steps` k > 1 (multi-step decode): every row is a one-token decode that samples; the runner runs
    k forward+sample iterations in one device call, each feeding its sampled ids to the next (positions and
    KV slots advanced on the device from the page-table rows), and returns k tokens per row
    (`StepOutputs.more` holds tokens 2..k). No page copies, penalties or grammar rows in such a plan.
    """

    sequences: list[SequenceWork]
    page_copies: list[tuple[int, int]] = field(default_factory=list)
    decode_steps: int = 1

    @property
    def num_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.sequences)

    @property
    def is_empty(self) -> bool:
        return not self.sequences


@dataclass(frozen=True)
class SampledToken:
    """The runner's answer for one sequence that had `sample=True`."""

    token_id: int
    logprob: float
    top_logprobs: list[tuple[int, float]] = field(default_factory=list)


@dataclass(frozen=True)
class StepOutputs:
    """request_id -> sampled token, for every sequence of the plan with sample=True; after a multi-step
    plan (`StepPlan.decode_steps` k > 1) `more[request_id]` are the k - 1 tokens sampled after it, in order."""

    tokens: dict[str, SampledToken]
    more: dict[str, list[SampledToken]] = field(default_factory=dict)  # multi-step: each row's tokens 2..k
