"""Engine command-line flags, defined once from `EngineConfig`: the server and the batch job add them with
`add_engine_flags(parser)` and read them back with `engine_config(args)`, so the two never drift.

Every EngineConfig field is a flag `--field-name` (default: the field's) with its help from `_FLAGS`, or
is listed in `NOT_FLAGS` with why not (tests/engine check both). `parse_engine_args(parser, argv)` also
builds the config, so a bad value (an unknown policy, a negative size, two KV budgets) stops the command
with a usage error before any model loads. Enum-like flags list their choices in --help and in the error.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, Field, fields

from trellis_jax import layer_unroll
from trellis_jax.cache import get_policy, policy_names
from trellis_jax.cli import (
    add_compile_cache_flags,
    add_model_flags,
    compile_cache_dir,
    default_compile_cache_dir,  # noqa: F401 (tools import it from here)
    prepared_cache_dir,
)
from trellis_jax.dtypes import MATMUL_BACKENDS, QUANTIZATIONS, WEIGHT_FORMATS
from trellis_jax.engine.config import KV_CACHE_DTYPES, EngineConfig
from trellis_jax.engine.multihost_flags import add_multihost_flags, multihost_problem
from trellis_jax.scheduler.config import SCHEDULE_POLICIES

NOT_FLAGS = {
    "shared_namespaces": "a tenancy layout, set from Python (LLM / build_engine)",
    "warmup": "the CLIs always compile ahead, so a request never waits for a compile",
    "check_integrity_when_idle": "a safety check the CLIs always keep on",
}
_SPECIAL = {
    "model",
    "dtype",
    "kv_cache_dtype",
    "materialise_head",
    "compile_cache_dir",
    "prepared_cache_dir",
    "overlap",
}  # spelled by hand below
_OVERLAP = {"auto": None, "on": True, "off": False}


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _eviction_policy(name: str) -> str:
    try:
        get_policy(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error}; or give 'package.module:name'") from None
    return name


_POLICIES = ", ".join(policy_names())
_FLAGS: dict[str, dict] = {
    "page_size": {"type": int, "help": "tokens per KV page"},
    "num_pages": {
        "type": int,
        "help": "KV pool size in pages (at most one of --num-pages, --kv-memory, "
        "--kv-memory-fraction; none: the runner's default size)",
    },
    "kv_memory": {
        "help": "KV pool size, e.g. 512MiB or 2GB (default: room for --max-num-seqs full-length sequences, capped)"
    },
    "weight_format": {
        "choices": WEIGHT_FORMATS,
        "help": "a quantized GGUF's layer weights in memory: packed (Q8_0/Q4_0/Q4_1 as on disk, multiplied "
        "packed), float (dequantized at load to --dtype), auto (the measured choice: docs/benchmarks/quantized.md)",
    },
    "matmul_backend": {
        "choices": MATMUL_BACKENDS,
        "help": "the matmul op's CPU backend: auto (timed per shape class on the first start, stored under "
        "~/.cache/trellis-jax/calibration; env TRELLIS_MATMUL_BACKEND, TRELLIS_CALIBRATION=off for the fixed "
        "rules), native (the C++ kernels for every matrix) or xla (docs/benchmarks/calibration.md)",
    },
    "quantization": {
        "choices": QUANTIZATIONS,
        "help": "quantize a float checkpoint's matrices at load, per group of 32: int8 (Q8_0-like, symmetric) or "
        "int4 (Q4_1-like, with a minimum); multiplied packed (docs/benchmarks/quantized.md)",
    },
    "kv_memory_fraction": {"type": float, "help": "KV pool size as a fraction of free device memory"},
    "max_num_seqs": {"type": int, "help": "sequences per step"},
    "max_num_batched_tokens": {"type": int, "help": "tokens per step; longer prompts are prefilled in chunks"},
    "max_model_len": {
        "type": int,
        "help": "prompt + output cap per request (default: the model's context, at most 4096)",
    },
    "eviction_policy": {
        "type": _eviction_policy,
        "metavar": "POLICY",
        "help": f"which cached prefixes go first when the pool is full: {_POLICIES}, or 'package.module:name'",
    },
    "schedule_policy": {"choices": SCHEDULE_POLICIES, "help": "admission order (lpm: longest cached prefix first)"},
    "prefill_saturation_tokens": {
        "type": int,
        "help": "admit no further prompt into a step that already holds "
        "this many prompt tokens: lower time to first token (CPU: try 64); default: off",
    },
    "num_lookup_tokens": {
        "type": int,
        "help": "speculative decoding by prompt lookup: greedy requests also verify "
        "up to this many tokens guessed from their own context (0: off; try 3)",
    },
    "lookup_max_step_tokens": {"type": int, "help": "prompt-lookup guesses only join steps of fewer tokens than this"},
    "decode_steps": {
        "type": int,
        "metavar": "K",
        "help": "multi-step decode: a step of plain decodes with nobody waiting runs K decode iterations in "
        "one device call (1: off; docs/benchmarks/multi-step.md)",
    },
    "disable_resident_state": {
        "help": "decode steps pack and send every row's page table and sampling knobs, instead of only what "
        "changed since the rows the device keeps (for A/B runs; docs/benchmarks/overlap.md)"
    },
    "tensor_parallel_size": {
        "type": int,
        "metavar": "N",
        "help": "split the model (Megatron-style) and the KV pages (by KV head) over the first N devices; "
        "the KV budget is per device (CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N)",
    },
    "disable_radix_cache": {"help": "no prefix reuse (for comparisons)"},
    "deterministic": {
        "help": "batch-invariant greedy outputs: a request's tokens do not depend on what else runs "
        "(CPU: native kernels in a fixed order; slower long prefills; elsewhere one compiled shape)"
    },
    "token_buckets": {
        "type": _ints,
        "metavar": "N,N,...",
        "help": "compiled token-count buckets (default: powers of two from 2, then 4 per doubling above 128, up to --max-num-batched-tokens)",
    },
    "seq_buckets": {
        "type": _ints,
        "metavar": "N,N,...",
        "help": "compiled sequence-count buckets (default: powers of two)",
    },
    "attn_impl": {
        "help": "attention backend: reference, xla, cpu_native, pallas_triton, "
        "pallas_interpret (default: the platform's)"
    },
    "unroll_layers": {
        "type": layer_unroll.parse_flag,
        "nargs": "?",
        "const": layer_unroll.FULL,  # the old switch spelling, `--unroll-layers` alone: a full unroll
        "metavar": "N|full",
        "help": "the layer loop: 1 a scan, N layers per loop iteration, full (or -1, or the flag alone) no loop; "
        "on GPU fewer loop iterations are faster steps at longer compiles (full: ~8x; "
        "docs/benchmarks/runner-raw-speed.md)",
    },
    "allow_special_tokens_in_content": {
        "help": "let special-token text in chat messages (<|im_start|>...) act "
        "as control tokens; by default it is plain text"
    },
    "kv_host_bytes": {
        "metavar": "BYTES",
        "help": "keep evicted prefix pages in host RAM, up to this size (e.g. 4GiB), and reload them "
        "when that beats recomputing (default: off, or 1GiB with --kv-cache-dir)",
    },
    "kv_cache_dir": {
        "metavar": "DIR",
        "help": "also write evicted prefix pages back to disk here (checksummed, fingerprinted by the model), "
        "so a restart with the same model reuses them (default: off)",
    },
    "kv_prefetch": {
        "type": float,
        "metavar": "FRACTION",
        "help": "with --kv-cache-dir, a restart reads the persisted prefixes back onto up to this fraction of "
        "the KV pool in the background, most recently used first, before a request asks (0: off)",
    },
    "chat_template": {
        "metavar": "FILE",
        "help": "a Jinja chat template (Hugging Face semantics) used instead of the model's (default: the model's)",
    },
}


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine")
    add_model_flags(group)
    for field in fields(EngineConfig):
        if field.name not in _SPECIAL and field.name not in NOT_FLAGS:
            _add_field_flag(group, field)
    group.add_argument(
        "--kv-cache-dtype",
        default="auto",
        choices=["auto", *filter(None, KV_CACHE_DTYPES)],
        help="dtype of the KV pages (auto: the model's); bfloat16 halves KV memory and decode reads",
    )
    group.add_argument(
        "--no-materialise-head",
        dest="materialise_head",
        action="store_const",
        const=False,
        default=None,
        help="tied-embedding models: no transposed copy of the embedding as LM head "
        "(saves its memory; the CPU head gets slower)",
    )
    add_compile_cache_flags(group)
    group.add_argument(
        "--overlap",
        choices=sorted(_OVERLAP),
        default="auto",
        help="overlapped engine loop: schedule and dispatch the next step while the device runs this one "
        "(auto: on where it pays, see docs/benchmarks/overlap.md)",
    )
    add_multihost_flags(parser)


def _add_field_flag(group, field: Field) -> None:
    options = dict(_FLAGS[field.name])  # a KeyError here: a new EngineConfig field needs a row (or NOT_FLAGS)
    flag = "--" + field.name.replace("_", "-")
    if field.default is False:
        group.add_argument(flag, action="store_true", **options)
    else:
        group.add_argument(flag, default=None if field.default is MISSING else field.default, **options)


def engine_options(args: argparse.Namespace) -> dict:
    """The EngineConfig keywords the parsed flags ask for."""
    options = {f.name: getattr(args, f.name) for f in fields(EngineConfig) if f.name not in NOT_FLAGS}
    options["kv_cache_dtype"] = None if args.kv_cache_dtype == "auto" else args.kv_cache_dtype
    options["compile_cache_dir"] = compile_cache_dir(args)
    options["prepared_cache_dir"] = prepared_cache_dir(args)
    options["overlap"] = _OVERLAP[args.overlap]
    return options


def engine_config(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(**engine_options(args))


def parse_engine_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse, then check the engine config at once: a bad combination is a usage error, before any load."""
    args = parser.parse_args(argv)
    try:
        engine_config(args)
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    problem = multihost_problem(args, os.environ)
    if problem:
        parser.error(problem)
    return args
