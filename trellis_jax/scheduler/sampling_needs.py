"""Which sampling settings make a row's next token depend on host state (host only, no jax).

Penalties read the request's own token counts; a plain greedy row's next token depends only on its context,
so prompt-lookup guesses for it can be verified. The scheduler's multi-step, draft and overlap rules ask here.
"""

from __future__ import annotations

from trellis_jax.step_plan import SamplingArrays


def penalized(s: SamplingArrays) -> bool:
    return s.presence_penalty != 0.0 or s.frequency_penalty != 0.0 or s.repetition_penalty != 1.0


def plain_greedy(s: SamplingArrays) -> bool:
    """Greedy without penalties: the next token depends only on the context, so guesses can be verified.
    A grammar-constrained sequence speculates too: the engine gives draft row i the grammar's mask after
    guesses 0..i (SequenceWork.bitmask), so each row's greedy token is the one plain decoding would pick."""
    return s.temperature == 0.0 and not penalized(s)
