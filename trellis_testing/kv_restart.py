"""Warm-restart tests on a real engine (tiny model, deterministic): one small config and one shared-system
request, so a restarted engine can be compared with a cold one token for token.

restart_config(**overrides) -> EngineConfig    ask(engine, request_id, question) -> CompletionOutput
SYSTEM: 4 whole pages (page size 16) of a shared system prompt.
"""

from __future__ import annotations

from trellis_jax.engine.api import EngineConfig, SamplingParams
from trellis_testing.drive import run_all

GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
SYSTEM = [(5 * j) % 240 + 7 for j in range(64)]


def restart_config(**overrides) -> EngineConfig:
    """deterministic=True: a hit and a recompute give the same floats, so any difference in outputs comes
    from a page that does not hold the KV its key names. kv_prefetch=0: a restarted engine's first request
    reloads the persisted pages itself (the path these tests check); the prefetch tests turn it on."""
    options = dict(
        num_pages=24,
        page_size=16,
        max_num_seqs=2,
        max_num_batched_tokens=64,
        token_buckets=(8, 64),
        seq_buckets=(2,),
        max_model_len=256,
        deterministic=True,
        kv_prefetch=0.0,
    )
    return EngineConfig(**{**options, **overrides})


def ask(engine, request_id: str, question: int):
    """SYSTEM and a short question, greedy; -> the completion."""
    engine.add_request(request_id, SYSTEM + [200 + question, 201, 202], GREEDY)
    return run_all(engine)[request_id].outputs[0]
