"""Live mode: the same trace through the real engine (``trellis_jax.engine.LLM``), compared with the
simulator, request by request.

``live_replay(trace, llm)`` serves the requests one at a time in trace order (each ``generate`` call
finishes before the next starts: arrival order, one running request, as ``fcfs`` with ``max_batch=1``),
greedy, ``max_tokens = max(output_len, 1)`` with EOS ignored, in each request's namespace. It returns
the engine's reported ``num_cached_tokens`` per request and the trace *as served*: the prompts with the
tokens the model actually generated as outputs (the engine inserts those, not the trace's).
``compare(trace, llm)`` then replays the served trace in simulation with the engine cache's own pool
size, page size and policy, and lists the requests where the two disagree (none, if the simulator is
faithful). The engine's cache should be fresh (nothing inserted yet); ``compare`` empties it first.

``python -m trellis_jax.ablate.live --workload shared_system --scale 0.02 --num-pages 96`` runs it on
the default model and prints the comparison as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass

import numpy as np

from trellis_jax.ablate.replay import ReplayConfig, ReplayResult, replay
from trellis_jax.ablate.trace import Trace, TraceRequest


@dataclass
class LiveResult:
    cached_tokens: np.ndarray  # [num_requests] as the engine reported them
    served: Trace  # the trace with the engine's generated tokens as outputs
    wall_s: float


@dataclass
class Comparison:
    live: LiveResult
    sim: ReplayResult
    mismatches: list[int]  # trace indices where live and simulated hit tokens differ

    def summary(self) -> dict:
        prompt_tokens = int(self.sim.prompt_tokens.sum())
        return dict(
            requests=len(self.sim.prompt_tokens),
            prompt_tokens=prompt_tokens,
            live_hit_tokens=int(self.live.cached_tokens.sum()),
            sim_hit_tokens=self.sim.hit_tokens,
            live_hit_rate=int(self.live.cached_tokens.sum()) / prompt_tokens,
            sim_hit_rate=self.sim.hit_rate,
            mismatched_requests=self.mismatches,
            sim_pages_evicted=self.sim.evicted_pages,
            live_wall_s=self.live.wall_s,
            sim_wall_s=self.sim.wall_s,
            policy=self.sim.config.policy,
            page_size=self.sim.config.page_size,
            capacity_pages=self.sim.config.num_pages,
        )


def engine_cache(llm):
    """The RadixCache inside an LLM's engine."""
    return llm.engine.scheduler.kv.cache


def live_replay(trace: Trace, llm) -> LiveResult:
    """Serve ``trace`` through ``llm`` one request at a time (see the module docstring)."""
    from trellis_jax.engine.sampling_params import SamplingParams

    cached, served = [], []
    start = time.perf_counter()
    for r in trace.requests:
        params = SamplingParams(temperature=0, max_tokens=max(r.output_len, 1), ignore_eos=True)
        out = llm.generate([r.prompt.tolist()], params, namespace=r.namespace)[0]
        cached.append(out.num_cached_tokens)
        served.append(TraceRequest(r.request_id, r.prompt, out.token_ids, r.namespace, r.arrival_time))
    wall = time.perf_counter() - start
    return LiveResult(np.array(cached, np.int64), Trace(served, trace.shared_namespaces, trace.name), wall)


def sim_config_for(llm) -> ReplayConfig:
    """The simulator cell that mirrors the engine's cache: same usable pages, page size and policy."""
    cache = engine_cache(llm)
    return ReplayConfig(
        num_pages=cache.num_pages - 1, page_size=cache.page_size, policy=cache.policy.name, partial_pages=True
    )


def compare(trace: Trace, llm) -> Comparison:
    """Live run, then the simulator on the served trace; per-request disagreements listed."""
    cache = engine_cache(llm)
    if cache.shared_namespaces != trace.shared_namespaces:
        raise ValueError(f"engine shares {sorted(cache.shared_namespaces)}, trace {sorted(trace.shared_namespaces)}")
    cache.evict(cache.num_pages)  # start from an empty tree, as the simulator does
    live = live_replay(trace, llm)
    sim = replay(live.served, sim_config_for(llm))
    mismatches = np.flatnonzero(live.cached_tokens != sim.cached_tokens).tolist()
    return Comparison(live, sim, mismatches)


def main(argv: list[str] | None = None) -> int:
    from trellis_jax.ablate.synthetic import generate
    from trellis_jax.ablate.workloads import WORKLOADS, workload_spec
    from trellis_jax.engine.llm import LLM

    p = argparse.ArgumentParser(prog="python -m trellis_jax.ablate.live", description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", default="shared_system", choices=WORKLOADS)
    p.add_argument("--scale", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="engine model (default: the default model)")
    p.add_argument("--num-pages", type=int, default=96, help="engine KV pool (page 0 included)")
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--policy", default="lru")
    args = p.parse_args(argv)
    llm = LLM(
        args.model,
        num_pages=args.num_pages,
        page_size=args.page_size,
        eviction_policy=args.policy,
        max_num_seqs=1,
        max_num_batched_tokens=256,
        deterministic=True,
        token_buckets=(256,),
        seq_buckets=(1,),
    )
    spec = dataclasses.replace(workload_spec(args.workload, args.seed, args.scale), vocab_size=llm.tokenizer.vocab_size)
    print(json.dumps(compare(generate(spec), llm).summary(), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
