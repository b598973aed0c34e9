"""The runner: the device side of the engine (JAX). Owns params and KV pages, runs `StepPlan`s.

Lifecycle: `Runner(model, ...)` sizes and allocates the KV pool, `warmup()` compiles every bucket,
then `run(plan) -> StepOutputs` once per engine step. Imports: jax, the model package, pallas_kernels
and the plan contract (trellis_jax.step_plan, plain data); never the scheduler or the cache.
Modules: buckets (shapes), packing (plan -> padded arrays), penalties + sampling (on device),
step (the fused pure program), kv_pool (sizing), compile_count (XLA compile events), compile_cache (the
persistent compile cache, damaged entries replaced), programs (compiling and warming up the step and
multi-step programs), feed (the overlapped loop's fed tokens), launch (a dispatched step's read-back),
runner (the class).
"""

from trellis_jax.runner.buckets import Bucket, BucketOverflowError, BucketSet, powers_of_two
from trellis_jax.runner.compile_cache import enable_persistent_compile_cache
from trellis_jax.runner.compile_count import backend_compile_count, compiled_functions
from trellis_jax.runner.kv_pool import KVPoolSize, size_kv_pool
from trellis_jax.runner.runner import DEFAULT_MAX_LOGPROBS, DEFAULT_SEQ_BUCKETS, DEFAULT_TOKEN_BUCKETS, Runner

__all__ = [
    "Runner",
    "Bucket",
    "BucketSet",
    "BucketOverflowError",
    "powers_of_two",
    "KVPoolSize",
    "size_kv_pool",
    "backend_compile_count",
    "compiled_functions",
    "enable_persistent_compile_cache",
    "DEFAULT_TOKEN_BUCKETS",
    "DEFAULT_SEQ_BUCKETS",
    "DEFAULT_MAX_LOGPROBS",
]
