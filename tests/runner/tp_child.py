"""The tensor-parallel tests' child process: run jobs with N forced CPU devices, print one JSON line.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/runner/tp_child.py JOBS

JOBS: a JSON object, name -> [MODE, MODEL, SIZES] or [MODE, MODEL, SIZES, "on"]. The jobs run one after another
in this one process (one start, one jax import, each model loaded once), and the line printed is an object,
name -> {"result": ...} or {"error": the job's traceback}: a failing job fails only the tests that read it.

MODE "generate": for each size in SIZES (comma-separated) and the radix cache off and on (CACHE "on": on
only), greedy-generate the same prompts twice (the second pass hits the cache when it is on) -> tokens and
top logprobs per run.
MODE "compiles": after warm-up at each size, a mixed workload -> XLA and runner compilations it caused.
MODE "kv_bytes": at each size -> the KV pool's bytes on each device and in all.
MODEL: a checkpoint path, or "" for the default model, loaded once (float32). Small buckets keep runs short.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback

PROMPTS = [[1, 5, 9, 13, 7, 22, 31, 8, 2, 17, 19, 4, 6, 30, 11, 3, 12], [1, 5, 9, 13, 7, 22, 40, 41], [3, 4]]


def engine_config(size, **options):
    """Small buckets and pool, float32, tensor-parallel `size`."""
    from trellis_jax.engine.config import EngineConfig

    small = dict(max_num_seqs=4, max_num_batched_tokens=16, max_model_len=96, token_buckets=(16,), seq_buckets=(4,))
    small.update(options)
    return EngineConfig(dtype="float32", weight_format="float", tensor_parallel_size=size, page_size=4, **small)


def make_llm(loaded, size, runner=None, **options):
    """An LLM at tensor-parallel `size` over `loaded`, reusing `runner` (its compiled steps) when given."""
    from trellis_jax.engine.api import LLM
    from trellis_jax.engine.builder import build_engine

    return LLM.from_engine(*build_engine(engine_config(size, **options), loaded=loaded, runner=runner))


def generate(loaded, sizes, caches):
    from trellis_jax.engine.api import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=10, logprobs=5)
    runs = {}
    for size in sizes:
        runner = None
        for cache in caches:
            llm = make_llm(loaded, size, runner, disable_radix_cache=not cache)
            runner = llm.engine.runner
            passes = [llm.generate(PROMPTS, params) for _ in range(2)]
            runs[f"{size}/{'cache' if cache else 'nocache'}"] = [
                {
                    "tokens": out.outputs[0].token_ids,
                    "cached": out.num_cached_tokens,
                    "logprobs": [[lp.logprob, *(p for _, p in lp.top_logprobs)] for lp in out.outputs[0].logprobs],
                }
                for outs in passes
                for out in outs
            ]
    return runs


def compiles(loaded, sizes, _):
    from trellis_jax.engine.api import SamplingParams
    from trellis_jax.runner import compile_count

    counts = {}
    for size in sizes:
        llm = make_llm(loaded, size, decode_steps=2, token_buckets=(4, 16))
        runner = llm.engine.runner
        before, own = compile_count.backend_compile_count(), runner.num_compilations
        llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=9))
        llm.generate(PROMPTS[:1], SamplingParams(temperature=0.8, top_p=0.9, seed=1, max_tokens=5))
        counts[size] = {"xla": compile_count.backend_compile_count() - before, "runner": runner.num_compilations - own}
    return counts


def kv_bytes(loaded, sizes, _):
    found = {}
    for size in sizes:
        runner = make_llm(loaded, size, num_pages=32, warmup=False).engine.runner  # sizes only: no compiles
        kv = runner._kv.k  # the runner is the only owner of the pages; read, never kept
        found[size] = {"total": int(kv.nbytes), "per_device": sorted(int(s.data.nbytes) for s in kv.addressable_shards)}
    return found


@functools.cache
def load(model: str):
    from trellis_jax.checkpoints import load_model

    return load_model(model or None, dtype="float32", weight_format="float")


def run_job(mode: str, model: str, sizes: str, *cache: str) -> dict:
    """One job -> {"result": ...}, or {"error": its traceback} (the jobs after it still run)."""
    try:
        caches = (True,) if list(cache) == ["on"] else (False, True)
        job = {"generate": generate, "compiles": compiles, "kv_bytes": kv_bytes}[mode]
        return {"result": job(load(model), [int(s) for s in sizes.split(",")], caches)}
    except Exception:
        return {"error": traceback.format_exc()}


if __name__ == "__main__":
    print(json.dumps({name: run_job(*job) for name, job in json.loads(sys.argv[1]).items()}))
