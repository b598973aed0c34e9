"""Parameterised synthetic traces: Zipf-popular shared prefixes, multi-turn sessions, branching, and
bursts of one-off long prompts that flush an LRU cache.

The model (all lengths in tokens, each drawn uniformly in [mean/2, 3*mean/2], at least 1):
- ``num_prefixes`` shared prefixes (system prompts / documents) of ``prefix_len`` tokens; a new session
  picks prefix k with probability proportional to 1/(k+1)**zipf_alpha (alpha 0 = uniform);
- ``concurrent_sessions`` sessions are open at once; each step one of them (uniformly) sends its next
  turn, so sessions interleave as in a busy server. A session lasts ``turns`` turns (mean of a geometric
  law, or exactly, with ``fixed_turns``). A turn's prompt is the session's history plus a fresh user
  message of ``user_len``; the engine's output (``output_len``) joins the history, as in a chat;
- ``branching`` > 1: each turn sends that many sibling requests sharing the history (parallel agent
  continuations, few-shot questions); the session continues from the first one;
- every ``burst_every`` requests, ``burst_size`` one-off prompts of ``burst_len`` fresh tokens arrive
  (a batch job, a long document): they share nothing and push an LRU cache's useful prefixes out;
- ``num_tenants`` > 1 puts session i in namespace ``t{i % num_tenants}`` (prefixes are then per tenant);
- ``arrival_rate`` (requests/s) gives Poisson arrival times; None leaves them out.

Token ids: with ``vocab_size=None`` every fresh token is a new id (nothing matches by accident, even at
page size 1); with a vocabulary size they are uniform random ids below it (for the live engine).
Deterministic for a given spec (seeded numpy Generator).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from trellis_jax.ablate.trace import Trace, TraceError, TraceRequest


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    num_requests: int = 1000
    num_prefixes: int = 16
    prefix_len: int = 512
    zipf_alpha: float = 1.0
    concurrent_sessions: int = 8
    turns: float = 3.0
    fixed_turns: bool = False
    user_len: int = 64
    output_len: int = 64
    branching: int = 1
    burst_every: int = 0
    burst_size: int = 0
    burst_len: int = 2048
    num_tenants: int = 1
    arrival_rate: float | None = None
    vocab_size: int | None = None
    seed: int = 0
    name: str = "synthetic"

    def __post_init__(self):
        for name in ("num_requests", "concurrent_sessions", "user_len", "branching", "num_tenants"):
            if getattr(self, name) < 1:
                raise TraceError(f"SyntheticSpec.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_prefixes", "prefix_len", "output_len", "burst_every", "burst_size", "burst_len"):
            if getattr(self, name) < 0:
                raise TraceError(f"SyntheticSpec.{name} must be >= 0, got {getattr(self, name)}")
        if self.turns < 1 or self.zipf_alpha < 0:
            raise TraceError(f"need turns >= 1 and zipf_alpha >= 0, got {self.turns}, {self.zipf_alpha}")
        if self.arrival_rate is not None and self.arrival_rate <= 0:
            raise TraceError(f"arrival_rate must be > 0 or None, got {self.arrival_rate}")
        if self.vocab_size is not None and self.vocab_size < 2:
            raise TraceError(f"vocab_size must be >= 2 or None, got {self.vocab_size}")


class _Tokens:
    """Fresh token ids: a running counter (unique) or random ids below a vocabulary size."""

    def __init__(self, rng: np.random.Generator, vocab_size: int | None) -> None:
        self.rng, self.vocab_size, self.next = rng, vocab_size, 0

    def take(self, n: int) -> np.ndarray:
        if self.vocab_size is not None:
            return self.rng.integers(0, self.vocab_size, n, dtype=np.int32)
        ids = np.arange(self.next, self.next + n, dtype=np.int32)
        self.next += n
        return ids


@dataclasses.dataclass
class _Session:
    history: np.ndarray
    namespace: str
    turns_left: int


class _Generator:
    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        self.rng = np.random.default_rng(spec.seed)
        self.tokens = _Tokens(self.rng, spec.vocab_size)
        tenants = [f"t{i}" if spec.num_tenants > 1 else "" for i in range(spec.num_tenants)]
        self.prefixes = {
            (ns, k): self.tokens.take(self.length(spec.prefix_len)) for ns in tenants for k in range(spec.num_prefixes)
        }
        weights = 1.0 / np.arange(1, spec.num_prefixes + 1) ** spec.zipf_alpha
        self.popularity = weights / weights.sum() if spec.num_prefixes else None
        self.slots: list[_Session | None] = [None] * spec.concurrent_sessions
        self.sessions_started = 0
        self.requests: list[tuple[str, np.ndarray, np.ndarray, str]] = []

    def length(self, mean: int) -> int:
        if mean <= 1:
            return mean
        return int(self.rng.integers(max(1, mean // 2), mean + mean // 2 + 1))

    def new_session(self) -> _Session:
        spec = self.spec
        namespace = f"t{self.sessions_started % spec.num_tenants}" if spec.num_tenants > 1 else ""
        self.sessions_started += 1
        if spec.num_prefixes:
            k = int(self.rng.choice(spec.num_prefixes, p=self.popularity))
            history = self.prefixes[(namespace, k)]
        else:
            history = np.zeros(0, np.int32)
        turns = int(spec.turns) if spec.fixed_turns else int(self.rng.geometric(1.0 / spec.turns))
        return _Session(history, namespace, turns)

    def emit(self, prompt: np.ndarray, output: np.ndarray, namespace: str) -> None:
        self.requests.append((f"r{len(self.requests)}", prompt, output, namespace))

    def session_turn(self) -> None:
        spec = self.spec
        slot = int(self.rng.integers(len(self.slots)))
        session = self.slots[slot]
        if session is None or session.turns_left == 0:
            session = self.slots[slot] = self.new_session()
        outputs = []
        for _ in range(spec.branching):
            prompt = np.concatenate([session.history, self.tokens.take(self.length(spec.user_len))])
            output = self.tokens.take(self.length(spec.output_len))
            self.emit(prompt, output, session.namespace)
            outputs.append((prompt, output))
        session.history = np.concatenate(outputs[0])
        session.turns_left -= 1

    def burst(self) -> None:
        for _ in range(self.spec.burst_size):
            self.emit(self.tokens.take(self.length(self.spec.burst_len)), self.tokens.take(1), "")

    def run(self) -> Trace:
        spec = self.spec
        next_burst = spec.burst_every
        while len(self.requests) < spec.num_requests:
            if spec.burst_every and spec.burst_size and len(self.requests) >= next_burst:
                self.burst()
                next_burst += spec.burst_every + spec.burst_size
            else:
                self.session_turn()
        del self.requests[spec.num_requests :]
        return Trace(self.to_requests(), name=spec.name)

    def to_requests(self) -> list[TraceRequest]:
        times = [None] * len(self.requests)
        if self.spec.arrival_rate is not None:
            gaps = self.rng.exponential(1.0 / self.spec.arrival_rate, len(self.requests))
            times = np.cumsum(gaps).tolist()
        return [TraceRequest(rid, prompt, output, ns, t) for (rid, prompt, output, ns), t in zip(self.requests, times)]


def generate(spec: SyntheticSpec) -> Trace:
    """The trace described by ``spec`` (see the module docstring); same spec, same trace."""
    return _Generator(spec).run()
