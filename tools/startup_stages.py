"""Where an engine's start-up time goes, stage by stage (docs/benchmarks/startup.md).

    XDG_CACHE_HOME=DIR python tools/startup_stages.py [--model SPEC] [--dtype auto] [--kv-memory 2GiB]

Times, in one process: importing jax and the engine, loading the model (load_model with the prepared-weight cache
where this tree has one), the Runner (weight preparation by the matmul op, the KV pool), warm-up (the step
programs: loaded serialized, from JAX's compile cache, or compiled) and the engine, each with the process's
resident memory after it (a KV pool written at allocation shows up there whole). Run it twice with the same
XDG_CACHE_HOME: the second run is the warm start. The caches live under $XDG_CACHE_HOME/trellis-jax. The
script imports the engine from PYTHONPATH, so one copy of it times any source tree.
"""

from __future__ import annotations

import argparse
import inspect
import os
import time

T0 = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--kv-memory", default=None, help="KV pool size (default: the engine's, which follows free RAM)"
    )
    args = parser.parse_args()
    mark = Marks()
    import jax

    jax.devices()
    mark("import jax + init")
    from trellis_jax.checkpoints import load_model
    from trellis_jax.engine import builder
    from trellis_jax.engine.config import EngineConfig

    mark("import engine")
    base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "trellis-jax")
    extra = {}
    if "prepared_cache_dir" in inspect.signature(load_model).parameters:
        extra["prepared_cache_dir"] = os.path.join(base, "prepared")
    config = EngineConfig(
        model=args.model,
        dtype=args.dtype,
        compile_cache_dir=os.path.join(base, "xla"),
        warmup=False,
        kv_memory=args.kv_memory,
    )
    loaded = load_model(config.model, dtype=config.dtype, weight_format=config.weight_format, **extra)
    jax.block_until_ready(loaded.params)
    mark("load model" + (" (prepared cache)" if extra else ""))
    runner = builder.make_runner(config, loaded)
    jax.block_until_ready((runner.params, runner._kv))
    mark(f"Runner: prepare + KV pool ({runner.kv_pool.describe()})")
    runner.warmup(progress=False)
    loaded_programs = getattr(runner._programs, "num_loaded", 0)
    mark(f"warm-up: {runner.num_compilations} compiled or from JAX's cache, {loaded_programs} loaded serialized")
    builder.build_engine(config, loaded, runner)
    mark("engine")


class Marks:
    def __init__(self) -> None:
        self.last = T0

    def __call__(self, what: str) -> None:
        now = time.perf_counter()
        print(f"{now - self.last:6.2f} s  (at {now - T0:6.2f})  rss {_resident_mib():6.0f} MiB  {what}", flush=True)
        self.last = now


def _resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


if __name__ == "__main__":
    main()
