"""`SchedulerConfig`: the scheduler's knobs, validated on construction (frozen, hashable)."""

from __future__ import annotations

from dataclasses import dataclass

SCHEDULE_POLICIES = ("lpm", "lpm-window", "dfs-weight", "fcfs", "priority")


def check_int(config, name: str, *, minimum: int, optional: bool = False) -> None:
    """ValueError unless config.<name> is an int >= minimum (not a bool), or None where `optional`."""
    value = getattr(config, name)
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(
            f"{type(config).__name__}.{name} must be {kind}{' or None (off)' if optional else ''}, got {value!r}"
        )


@dataclass(frozen=True)
class SchedulerConfig:
    """page_size: tokens per KV page. max_num_seqs: sequences per step. max_num_batched_tokens: the
    per-step token budget (decodes take 1 each, prefill is chunked into what is left).
    max_model_len: context length cap (prompt + output). schedule_policy: order of admission, see
    scheduler/policy.py. enable_prefix_cache False: no radix tree (every page private, freed at the end).
    lpm_window: how many of the oldest waiting requests "lpm-window" matches per step (bounds its cost).
    prefill_saturation_tokens: stop admitting waiting requests into a step once its prefill tokens reach
    this many (None: admit while the budget lasts). Where one prefill of that size already keeps the
    device at its compute ceiling (a CPU from ~64 rows), a second prefill in the same step gains nothing
    and delays the first one's first token; in the next step it runs beside the first one's decode.
    num_lookup_tokens: speculative decoding by prompt lookup (scheduler/lookup.py): each greedy decode
    without penalties also verifies up to this many tokens guessed from its own context, as extra rows of
    the same step; the guesses the model agrees with are kept (the output is what plain greedy decoding
    gives). 0: off. lookup_max_step_tokens: guesses are added only while the step holds fewer tokens than
    this, so they ride along in steps bound by reading the weights and never push a step into compute.
    decode_steps: multi-step decode (scheduler.py, step 4): a step of plain one-token decodes with nobody
    waiting runs this many decode iterations in one device call. 1: off.
    """

    page_size: int = 16
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 512
    max_model_len: int = 2048
    schedule_policy: str = "lpm"
    enable_prefix_cache: bool = True
    lpm_window: int = 128
    prefill_saturation_tokens: int | None = None
    num_lookup_tokens: int = 0
    lookup_max_step_tokens: int = 8
    decode_steps: int = 1

    def __post_init__(self) -> None:
        for name in (
            "page_size",
            "max_num_seqs",
            "max_num_batched_tokens",
            "max_model_len",
            "lpm_window",
            "lookup_max_step_tokens",
            "decode_steps",
        ):
            check_int(self, name, minimum=1)
        check_int(self, "num_lookup_tokens", minimum=0)
        check_int(self, "prefill_saturation_tokens", minimum=1, optional=True)
        if self.schedule_policy not in SCHEDULE_POLICIES:
            raise ValueError(f"unknown schedule_policy {self.schedule_policy!r}; choose from {SCHEDULE_POLICIES}")
