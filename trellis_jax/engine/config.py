"""`EngineConfig`: every engine option (what `LLM(**options)`, the server and the batch job accept).

KV memory: give at most one of num_pages, kv_memory (bytes, or a string like "512MiB" / "2GB") and
kv_memory_fraction (of free device memory); none = the runner's default. deterministic=True: a sequence's
floats, hence its greedy tokens, do not depend on what else is in the batch, how its prompt was chunked or
what the cache held (a batch-invariant runner, runner/invariance.py: every matmul and attention row reduced in
one fixed order; the usual buckets). Where this machine lacks those kernels (not a CPU with AVX2+FMA or
AVX-512, other dtypes) it falls back to one compiled bucket, a weaker guarantee (engine/builder.py).
token_buckets / seq_buckets override the compiled bucket sizes (fewer buckets: faster start-up, more padding).
prefill_saturation_tokens: once a step holds this many prompt tokens, waiting requests wait for the next
step (scheduler.config; None: off). A latency knob: on CPU, whose matmuls reach their FLOP ceiling at ~64
rows, so a second prompt only delays the first one's first token (docs/benchmarks/scheduler-knobs.md).
num_lookup_tokens: speculative decoding by prompt lookup (scheduler.config): greedy requests without
penalties also verify up to this many tokens guessed from their own context in each decode step; the
output is plain greedy decoding's, in fewer steps when the continuation repeats its context. 0: off.
allow_special_tokens_in_content: chat messages' special-token text (`<|im_start|>`) acts as the model's
control tokens, as the rendered template's own markup does. Off (default): it is tokenized as plain
text, so a user cannot open a system turn. Raw string prompts always parse special tokens.
overlap: the overlapped engine loop (engine/engine.py): the host schedules and dispatches step n+1 before
it reads step n's tokens, which stay on the device as step n+1's inputs. True / False force it; None
(default, "auto") turns it on where it pays (engine/builder.py `overlap_by_default`).
decode_steps: multi-step decode (scheduler.py step 4, runner/step.py make_multi_step): a step of one-token
decodes without penalties, grammars or prompt-lookup guesses, with no request waiting, runs this many
decode iterations in one device call and returns that many tokens per row (stop ids, max_tokens and stop
strings still end a sequence at the right token; the extra tokens are dropped). 1: off.
disable_resident_state: decode steps normally send only each row's token, slot and new page (page tables,
positions and sampling knobs stay on the device, runner/resident.py); True packs every step's whole wire.
tensor_parallel_size: N > 1 splits attention and MLP Megatron-style and the KV pages by KV head over the
first N devices (runner/tensor_parallel.py); the KV budget is then per device, and a quantized GGUF loads
as float ("auto" weight format). 1: one device.
kv_host_bytes / kv_cache_dir: the radix cache's lower tiers (engine/page_store.py): evicted prefix pages are
demoted to host RAM (at most kv_host_bytes, e.g. "4GiB") and, with kv_cache_dir, written back to disk there;
a later match reloads them when that beats recomputing, and a restart with the same model reuses the disk's.
kv_prefetch: on such a restart, the persisted prefixes (most recently used first) are read back in the
background onto free device pages, at most this fraction of the pool, so the first request finds them on the
device (engine/prefetch.py). 0: off (a request reloads them when it matches them).
chat_template: the path of a Jinja chat template (Hugging Face semantics) that replaces the model's own
for every chat; read when the engine is built (a missing file or a template that does not parse fails then).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from trellis_jax import layer_unroll
from trellis_jax.cache import get_policy
from trellis_jax.dtypes import DTYPE_CHOICES, MATMUL_BACKENDS, NO_QUANTIZATION, WEIGHT_FORMATS, check_quantization
from trellis_jax.scheduler.config import SCHEDULE_POLICIES, check_int
from trellis_jax.sizes import parse_bytes

# None + model.config.KV_DTYPES, spelled out: importing trellis_jax.model would pull in jax, which the
# engine API keeps out of its import (tests/scheduler); tests/serve checks the two lists agree.
KV_CACHE_DTYPES = (None, "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class EngineConfig:
    model: str | None = None  # GGUF file, HF dir, orbax dir or preset; None = the default model
    dtype: str = "auto"  # "auto": bfloat16 where this machine computes it faster, else float32 (trellis_jax.dtypes)
    # A quantized GGUF's layer weights: "packed" keeps Q8_0/Q4_0/Q4_1 as they are on disk (the matmul op multiplies
    # them packed), "float" dequantizes them at load, "auto" is the measured choice (trellis_jax.dtypes).
    weight_format: str = "auto"
    # "int8" / "int4": a float checkpoint's matrices quantized at load, per group of 32 (checkpoints/quantize.py).
    quantization: str = "none"
    kv_cache_dtype: str | None = None  # KV pages: None = the model's dtype; "bfloat16" halves KV memory and reads
    page_size: int = 16
    num_pages: int | None = None
    kv_memory: int | str | None = None
    kv_memory_fraction: float | None = None
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 512
    max_model_len: int | None = None  # None: the model's context length, capped at 4096
    eviction_policy: str = "lru"
    schedule_policy: str = "lpm"
    prefill_saturation_tokens: int | None = None  # None: off (admit prefills while the budget lasts)
    num_lookup_tokens: int = 0  # prompt-lookup speculative decoding for greedy requests (0: off)
    lookup_max_step_tokens: int = 8  # guesses only join steps of fewer tokens (here 8 rows cost ~1.1x one row)
    disable_radix_cache: bool = False
    shared_namespaces: tuple[str, ...] = ()
    deterministic: bool = False
    token_buckets: tuple[int, ...] | None = None  # None: runner.buckets.prefill_friendly(2, max_num_batched_tokens)
    seq_buckets: tuple[int, ...] | None = None  # None: powers of two up to max_num_seqs
    attn_impl: str | None = None
    # The layer loop: 1 a scan, N layers per iteration, -1 full (trellis_jax/layer_unroll.py; True/False too).
    unroll_layers: int = 1
    materialise_head: bool | None = None  # tied models: keep embed.T for the LM head (None: where it pays, CPU)
    matmul_backend: str = "auto"  # "auto": timed per shape class on this machine; "native" / "xla": pinned
    compile_cache_dir: str | None = None
    prepared_cache_dir: str | None = None  # a GGUF model's loaded weights kept here between starts (None: off)
    warmup: bool = True
    check_integrity_when_idle: bool = True
    allow_special_tokens_in_content: bool = False  # chat content's special-token text acts as control tokens
    chat_template: str | None = None  # a Jinja chat template file used instead of the model's
    overlap: bool | None = None  # overlapped engine loop; None: where it pays (builder.overlap_by_default)
    decode_steps: int = 1  # multi-step decode: decode iterations per device call for plain decode steps (1: off)
    disable_resident_state: bool = False  # pack every step's whole wire, not only what changed (A/B runs)
    tensor_parallel_size: int = 1  # split the model and KV pages over this many devices (runner/tensor_parallel.py)
    kv_host_bytes: int | str | None = None  # L2: host RAM for demoted KV pages (None: none unless kv_cache_dir)
    kv_cache_dir: str | None = None  # L3: demoted KV pages on disk, kept across restarts
    kv_prefetch: float = 0.5  # a restart reads persisted prefixes back onto up to this fraction of the pool (0: off)

    def __post_init__(self) -> None:
        for name in (
            "page_size",
            "max_num_seqs",
            "max_num_batched_tokens",
            "lookup_max_step_tokens",
            "decode_steps",
            "tensor_parallel_size",
        ):
            check_int(self, name, minimum=1)
        check_int(self, "prefill_saturation_tokens", minimum=1, optional=True)
        check_int(self, "num_lookup_tokens", minimum=0)
        if self.max_num_seqs > self.max_num_batched_tokens:
            raise ValueError(
                f"max_num_seqs ({self.max_num_seqs}) exceeds max_num_batched_tokens ({self.max_num_batched_tokens})"
            )
        get_policy(self.eviction_policy)  # ValueError naming the registered policies
        if self.schedule_policy not in SCHEDULE_POLICIES:
            raise ValueError(f"unknown schedule_policy {self.schedule_policy!r}; choose from {SCHEDULE_POLICIES}")
        budgets = [n for n in ("num_pages", "kv_memory", "kv_memory_fraction") if getattr(self, n) is not None]
        if len(budgets) > 1:
            raise ValueError(f"give at most one KV budget, got {budgets}")
        if self.kv_memory is not None:
            parse_bytes(self.kv_memory)
        if self.matmul_backend not in MATMUL_BACKENDS:
            raise ValueError(f"matmul_backend must be one of {MATMUL_BACKENDS}, got {self.matmul_backend!r}")
        if self.dtype not in DTYPE_CHOICES:
            raise ValueError(f"dtype must be one of {DTYPE_CHOICES}, got {self.dtype!r}")
        if self.weight_format not in WEIGHT_FORMATS:
            raise ValueError(f"weight_format must be one of {WEIGHT_FORMATS}, got {self.weight_format!r}")
        if self.deterministic and self.weight_format == "packed":
            raise ValueError(
                "deterministic=True needs float weights (no batch-invariant packed kernel): weight_format 'float' or 'auto'"
            )
        check_quantization(self.quantization, self.weight_format)
        if self.deterministic and self.quantization != NO_QUANTIZATION:
            raise ValueError(
                f"deterministic=True needs float weights (no batch-invariant packed kernel): "
                f"quantization {self.quantization!r} packs them; use quantization 'none'"
            )
        if self.tensor_parallel_size > 1 and self.weight_format == "packed":
            raise ValueError("tensor_parallel_size > 1 needs float weights: weight_format 'float' or 'auto'")
        if self.tensor_parallel_size > 1 and self.quantization != NO_QUANTIZATION:
            raise ValueError(
                f"tensor_parallel_size > 1 needs float weights: quantization {self.quantization!r} packs them; "
                "use quantization 'none'"
            )
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise ValueError(f"kv_cache_dtype must be one of {KV_CACHE_DTYPES}, got {self.kv_cache_dtype!r}")
        if self.overlap not in (None, True, False):
            raise ValueError(f"overlap must be True, False or None (auto), got {self.overlap!r}")
        object.__setattr__(self, "shared_namespaces", tuple(self.shared_namespaces))
        object.__setattr__(self, "unroll_layers", layer_unroll.normalize(self.unroll_layers))  # ValueError if bad
        self._check_tiers()

    def _check_tiers(self) -> None:
        if self.kv_host_bytes is not None and parse_bytes(self.kv_host_bytes) <= 0:
            raise ValueError(f"kv_host_bytes must be > 0, got {self.kv_host_bytes!r}")
        if self.kv_cache_dir is not None and (not isinstance(self.kv_cache_dir, str) or not self.kv_cache_dir):
            raise ValueError(f"kv_cache_dir must be a directory path, got {self.kv_cache_dir!r}")
        if isinstance(self.kv_prefetch, bool) or not isinstance(self.kv_prefetch, (int, float)):
            raise ValueError(f"kv_prefetch must be a fraction of the KV pool in [0, 1], got {self.kv_prefetch!r}")
        if not 0 <= self.kv_prefetch <= 1:
            raise ValueError(f"kv_prefetch must be a fraction of the KV pool in [0, 1], got {self.kv_prefetch!r}")
        tiered = self.kv_host_bytes is not None or self.kv_cache_dir is not None
        if tiered and self.disable_radix_cache:
            raise ValueError("kv_host_bytes / kv_cache_dir keep evicted prefix pages: they need the radix cache")

    @property
    def kv_host_bytes_value(self) -> int | None:
        return None if self.kv_host_bytes is None else parse_bytes(self.kv_host_bytes)

    @property
    def kv_memory_bytes(self) -> int | None:
        return None if self.kv_memory is None else parse_bytes(self.kv_memory)

    @classmethod
    def from_options(cls, **options) -> EngineConfig:
        """Keyword options -> config; an unknown option is a clear error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown engine option(s) {unknown}; known: {sorted(known)}")
        return cls(**options)
