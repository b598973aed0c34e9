"""Named workloads for the ablation grid: the five benchmark shapes (``tools/bench/workloads.py``) at a
size that puts a cache under pressure, and mixed traces made to separate policies.

Each is a ``SyntheticSpec`` (token ids, no tokenizer needed); ``scale`` multiplies the request count.
- ``shared_system``: one long system prompt, many different questions;
- ``multi_turn``: interleaved chats; each turn extends the chat's history (prompt + reply);
- ``few_shot``: a few long few-shot headers, many questions under each, interleaved;
- ``agentic``: long transcripts forking into parallel continuations at every step;
- ``no_share``: unrelated prompts (control: nothing to reuse);
- ``zipf_sessions``: Zipf-popular system prompts, multi-turn sessions, several tenants;
- ``zipf_flush``: the same with bursts of one-off long prompts that flush an LRU cache.
The benchmark harness's own files (text prompts, chat messages) load with ``trace.read_jsonl``.
"""

from __future__ import annotations

import dataclasses

from trellis_jax.ablate.synthetic import SyntheticSpec, generate
from trellis_jax.ablate.trace import Trace

_SPECS: dict[str, SyntheticSpec] = {
    "shared_system": SyntheticSpec(
        num_requests=400,
        num_prefixes=1,
        prefix_len=1024,
        turns=1,
        fixed_turns=True,
        concurrent_sessions=1,
        user_len=48,
        output_len=32,
    ),
    "multi_turn": SyntheticSpec(
        num_requests=600,
        num_prefixes=24,
        prefix_len=192,
        zipf_alpha=0.0,
        turns=8,
        fixed_turns=True,
        concurrent_sessions=24,
        user_len=96,
        output_len=96,
    ),
    "few_shot": SyntheticSpec(
        num_requests=600,
        num_prefixes=12,
        prefix_len=768,
        zipf_alpha=0.0,
        turns=1,
        fixed_turns=True,
        concurrent_sessions=1,
        user_len=48,
        output_len=16,
    ),
    "agentic": SyntheticSpec(
        num_requests=600,
        num_prefixes=8,
        prefix_len=1024,
        zipf_alpha=0.0,
        turns=4,
        fixed_turns=True,
        concurrent_sessions=4,
        branching=6,
        user_len=64,
        output_len=48,
    ),
    "no_share": SyntheticSpec(
        num_requests=300,
        num_prefixes=0,
        prefix_len=0,
        turns=1,
        fixed_turns=True,
        concurrent_sessions=1,
        user_len=512,
        output_len=32,
    ),
    "zipf_sessions": SyntheticSpec(
        num_requests=1500,
        num_prefixes=64,
        prefix_len=512,
        zipf_alpha=1.1,
        turns=3,
        concurrent_sessions=16,
        user_len=64,
        output_len=64,
        num_tenants=2,
    ),
    "zipf_flush": SyntheticSpec(
        num_requests=1500,
        num_prefixes=64,
        prefix_len=512,
        zipf_alpha=1.1,
        turns=3,
        concurrent_sessions=16,
        user_len=64,
        output_len=64,
        num_tenants=2,
        burst_every=60,
        burst_size=4,
        burst_len=1536,
    ),
}

WORKLOADS = tuple(_SPECS)


def workload_spec(name: str, seed: int = 0, scale: float = 1.0) -> SyntheticSpec:
    if name not in _SPECS:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    spec = _SPECS[name]
    return dataclasses.replace(spec, num_requests=max(1, round(spec.num_requests * scale)), seed=seed, name=name)


def workload(name: str, seed: int = 0, scale: float = 1.0) -> Trace:
    """The named workload's trace (deterministic in name, seed and scale)."""
    return generate(workload_spec(name, seed, scale))
