"""User-facing sampling parameters (`SamplingParams`), validated on construction.

The engine turns them into the runner's per-sequence `SamplingArrays` (trellis_jax/step_plan.py); nothing here
touches jax. Defaults follow the OpenAI API where it has one (temperature 1, top_p 1, no penalties).
`SamplingParams.from_openai(body)` maps an OpenAI-style request body (completions or chat) onto them.
"""

from __future__ import annotations

import numbers
import random
from dataclasses import dataclass, field, replace

from trellis_jax.engine.structured import StructuredOutput
from trellis_jax.field_ranges import MAX_LOGIT_BIAS, MAX_LOGPROBS, FieldRangeError, check_field
from trellis_jax.step_plan import SamplingArrays

__all__ = ["KNOB_KEYS", "MAX_LOGPROBS", "SAMPLING_BODY_KEYS", "SamplingParams", "StructuredOutput"]

# The per-row sampling knobs a request body sets by name (OpenAI's and vLLM's).
KNOB_KEYS = ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty")
# The body keys from_openai copies onto SamplingParams as they are.
SAMPLING_BODY_KEYS = ("n", *KNOB_KEYS, "seed", "stop_token_ids", "ignore_eos", "skip_special_tokens", "logit_bias")
_SEED_RANGE = 2**31 - 1


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one prompt's completions.

    temperature 0 is greedy. top_k 0 (or -1) is off; top_p 1 and min_p 0 are off. presence/frequency
    penalties act on generated tokens, repetition_penalty (1 = off) on prompt + generated tokens.
    seed makes sampling reproducible (same seed => same output, whatever the batch); with n > 1,
    completion i uses seed + i. stop: strings that end a completion (excluded from the text), checked
    on the detokenized text across token boundaries. stop_token_ids end it too (as do the model's EOS
    ids unless ignore_eos). max_tokens None means "until the context length cap". logprobs None returns
    none; 0 returns the sampled token's logprob; N adds the top-N alternatives.
    logit_bias: {token id: bias in [-100, 100]} (at most MAX_LOGIT_BIAS entries; OpenAI's string keys are
    accepted), added to the logits before penalties and sampling; stored as sorted (id, bias) pairs.
    structured_output: the output must match this grammar (structured.py); the sequence ends with "stop"
    when the grammar is complete. With n > 1 each completion has its own grammar state.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    stop_token_ids: tuple[int, ...] = field(default_factory=tuple)
    max_tokens: int | None = 16
    logprobs: int | None = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    logit_bias: tuple[tuple[int, float], ...] = field(default_factory=tuple)
    structured_output: StructuredOutput | None = None

    def __post_init__(self) -> None:
        # Accept the convenient spellings (a single stop string, lists) but store tuples: frozen + hashable.
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids or ()))
        object.__setattr__(self, "logit_bias", _bias_pairs(self.logit_bias))
        _check(
            self.structured_output is None or isinstance(self.structured_output, StructuredOutput),
            "structured_output",
            self.structured_output,
            "a StructuredOutput or None",
        )
        self._check_ranges()
        if self.top_k == -1:
            object.__setattr__(self, "top_k", 0)
        _check(all(isinstance(s, str) and s for s in self.stop), "stop", self.stop, "non-empty strings")
        for flag in ("ignore_eos", "skip_special_tokens"):
            _check(isinstance(getattr(self, flag), bool), flag, getattr(self, flag), "a bool")

    def _check_ranges(self) -> None:
        """Every number against FIELD_RANGES (its meaning and what the step's wire dtype carries)."""
        for name in _RANGED_FIELDS:
            value = getattr(self, name)
            if value is not None or name not in _OPTIONAL_FIELDS:
                check_field(name, value, owner="SamplingParams")
        for token in self.stop_token_ids:
            check_field("stop_token_ids", token, owner="SamplingParams")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def with_updates(self, **changes) -> SamplingParams:
        return replace(self, **changes)

    def to_arrays(self, completion_index: int = 0, default_seed: int | None = None) -> SamplingArrays:
        """The runner's view of completion `completion_index` (its seed is seed + index)."""
        base_seed = self.seed if self.seed is not None else default_seed
        if base_seed is None:
            base_seed = random.randrange(_SEED_RANGE)
        return SamplingArrays(
            temperature=float(self.temperature),
            top_k=int(self.top_k),
            top_p=float(self.top_p),
            min_p=float(self.min_p),
            presence_penalty=float(self.presence_penalty),
            frequency_penalty=float(self.frequency_penalty),
            repetition_penalty=float(self.repetition_penalty),
            seed=(int(base_seed) + completion_index) % _SEED_RANGE,
            num_logprobs=int(self.logprobs or 0),
            logit_bias=self.logit_bias,
            structured=self.structured_output is not None,
        )

    @classmethod
    def from_openai(cls, body: dict, **defaults) -> SamplingParams:
        """Sampling fields of an OpenAI completions/chat request body (unknown keys are ignored).

        Chat's `logprobs: bool` + `top_logprobs: int` and completions' `logprobs: int` both map to
        `logprobs`. vLLM-style extras (top_k, min_p, repetition_penalty, stop_token_ids, ignore_eos)
        are accepted too, and so are `logit_bias` and `response_format` (StructuredOutput.from_response_format).
        `defaults` fill fields the body does not set.
        """
        fields = dict(defaults)
        for key in SAMPLING_BODY_KEYS:
            if body.get(key) is not None:
                fields[key] = body[key]
        structured = StructuredOutput.from_response_format(body.get("response_format"))
        if structured is not None:
            fields["structured_output"] = structured
        if body.get("stop") is not None:
            fields["stop"] = body["stop"]
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None:
            fields["max_tokens"] = max_tokens
        logprobs = body.get("logprobs")
        if isinstance(logprobs, bool):
            top = body.get("top_logprobs")
            fields["logprobs"] = (check_field("top_logprobs", top) if top is not None else 0) if logprobs else None
        elif logprobs is not None:
            fields["logprobs"] = logprobs
        _check_types(fields)
        return cls(**fields)


_RANGED_FIELDS = ("n", *KNOB_KEYS, "seed", "max_tokens", "logprobs")
_OPTIONAL_FIELDS = ("seed", "max_tokens", "logprobs")  # None: random seed, up to the context cap, no logprobs


def _check_types(fields: dict) -> None:
    """The body's stop field (numbers are checked by SamplingParams against FIELD_RANGES)."""
    stop = fields.get("stop")
    if (
        stop is not None
        and not isinstance(stop, str)
        and not (isinstance(stop, (list, tuple)) and all(isinstance(s, str) for s in stop))
    ):
        raise ValueError(f"stop must be a string or a list of strings, got {stop!r}")


def _bias_pairs(bias) -> tuple[tuple[int, float], ...]:
    """{id: bias} (int or decimal-string ids) or (id, bias) pairs -> sorted pairs; FieldRangeError naming logit_bias."""
    items = bias.items() if isinstance(bias, dict) else bias
    try:
        items = list(items or ())
    except TypeError:
        raise FieldRangeError("logit_bias", f"logit_bias must map token ids to numbers, got {bias!r}") from None
    if len(items) > MAX_LOGIT_BIAS:
        raise FieldRangeError("logit_bias", f"logit_bias has {len(items)} entries, at most {MAX_LOGIT_BIAS}")
    pairs = {}
    for entry in items:
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
            raise FieldRangeError("logit_bias", f"logit_bias must map token ids to numbers, got {bias!r}")
        token, value = _bias_token(entry[0]), entry[1]
        if token in pairs:
            raise FieldRangeError("logit_bias", f"logit_bias names token {token} twice")
        pairs[token] = float(check_field("logit_bias", value))
    return tuple(sorted(pairs.items()))


def _bias_token(key) -> int:
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key)
    if isinstance(key, bool) or not isinstance(key, numbers.Integral) or not 0 <= key <= 2**31 - 1:
        raise FieldRangeError("logit_bias", f"logit_bias keys must be token ids (integers >= 0), got {key!r}")
    return int(key)


def _check(ok: bool, name: str, value, expected: str) -> None:
    if not ok:
        raise ValueError(f"SamplingParams.{name} must be {expected}, got {value!r}")
