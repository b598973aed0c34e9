"""build_engine(EngineConfig) -> (Engine, tokenizer): load the model, size the KV pool, wire the layers.

The runner sizes the pool; the radix cache is built over exactly the runner's page count, so page ids
mean the same thing on both sides. The scheduler's limits are clipped to the runner's buckets.
`deterministic=True` builds a batch-invariant runner (runner/invariance.py) with the usual buckets where this
machine has the kernels for it; elsewhere it falls back to one compiled bucket (every step the same shapes),
which removes the bucket's influence but not that of chunking, cache hits or a row's place in the batch.
"""

from __future__ import annotations

import logging

from trellis_jax.cache import RadixCache
from trellis_jax.engine.config import EngineConfig
from trellis_jax.engine.engine import Engine
from trellis_jax.engine.grammar import GrammarCompiler
from trellis_jax.engine.page_store import make_page_store, persisted_source
from trellis_jax.engine.tiers import TierMover
from trellis_jax.scheduler import Scheduler, SchedulerConfig

logger = logging.getLogger(__name__)

DEFAULT_MAX_MODEL_LEN = 4096


def build_engine(config: EngineConfig, loaded=None, runner=None) -> tuple[Engine, object]:
    """Returns the engine and the model's tokenizer.

    `loaded`: an already loaded LoadedModel; `runner`: an existing Runner over that model to reuse. The new
    engine's cache starts empty, so it writes every page before reading it; an engine whose pages another
    engine has since written must not be used again (its radix tree would read the other's KV).
    """
    from trellis_jax.tokenizer import IncrementalDetokenizer

    # Read before the slow load, so a bad path fails at once.
    template = read_chat_template(config.chat_template) if config.chat_template is not None else None
    loaded = loaded or load_for(config)
    if loaded.tokenizer is None:
        raise ValueError(f"model {loaded.source} has no tokenizer; the engine needs one")
    runner = runner or make_runner(config, loaded)
    cache = RadixCache(
        runner.num_pages,
        config.page_size,
        policy=config.eviction_policy,
        shared_namespaces=frozenset(config.shared_namespaces),
        enabled=not config.disable_radix_cache,
    )
    scheduler = Scheduler(
        SchedulerConfig(
            page_size=config.page_size,
            max_num_seqs=min(config.max_num_seqs, runner.max_num_seqs),
            max_num_batched_tokens=min(config.max_num_batched_tokens, runner.max_num_tokens),
            max_model_len=runner.max_context_len,
            schedule_policy=config.schedule_policy,
            enable_prefix_cache=not config.disable_radix_cache,
            prefill_saturation_tokens=config.prefill_saturation_tokens,
            num_lookup_tokens=config.num_lookup_tokens,
            lookup_max_step_tokens=config.lookup_max_step_tokens,
            decode_steps=config.decode_steps,
        ),
        cache,
    )
    tokenizer = loaded.tokenizer
    if config.chat_template is not None:
        tokenizer = tokenizer.with_chat_template(template, origin=config.chat_template)
    if config.allow_special_tokens_in_content:
        tokenizer = tokenizer.with_special_tokens_in_content(True)
    IncrementalDetokenizer(tokenizer)  # its decoding tables (~0.1 s) are built now, not in a first request's TTFT
    engine = Engine(
        scheduler,
        runner,
        make_detokenizer=lambda skip: IncrementalDetokenizer(tokenizer, skip_special_tokens=skip),
        eos_token_ids=tuple(tokenizer.eos_token_ids),
        grammar=GrammarCompiler(tokenizer),
        overlap=overlap_by_default(runner) if config.overlap is None else config.overlap,
        tiers=make_tiers(config, loaded, runner, scheduler),
    )
    return engine, tokenizer


def make_tiers(config: EngineConfig, loaded, runner, scheduler) -> TierMover | None:
    """The lower tiers (engine/page_store.py picks the store); a store that already holds pages (a restart)
    becomes demoted tree paths at once, so the first request can reload them."""
    store = make_page_store(config, loaded, runner)
    if store is None:
        return None
    tiers = TierMover(
        scheduler,
        runner,
        store,
        bytes_per_page=runner.kv_pool.bytes_per_page,
        checkpoint=config.kv_cache_dir is not None,  # copies of device pages: only a disk outlives the process
    )
    rebuilt = tiers.rebuild()
    logger.info("KV page store %s: %d pages rebuilt into the prefix tree", type(store).__name__, rebuilt)
    disk = persisted_source(store)
    if rebuilt and disk is not None and config.kv_prefetch > 0:
        budget = int(config.kv_prefetch * tiers.reloader.cache.num_free_pages)
        planned = tiers.start_prefetch(budget, disk.get, disk.keys_by_recency())
        logger.info("KV prefetch: reading %d persisted pages back onto the device in the background", planned)
    return tiers


def load_for(config: EngineConfig):
    """The model as `config` asks for it (what build_engine loads; multi-process followers load the same)."""
    from trellis_jax.checkpoints import load_model

    # Batch-invariant matmuls exist for float weights only: auto keeps a deterministic engine's weights float.
    # So do the tensor-parallel splits (runner/tensor_parallel.py).
    float_only = config.deterministic or config.tensor_parallel_size > 1
    weight_format = "float" if float_only and config.weight_format == "auto" else config.weight_format
    return load_model(
        config.model,
        dtype=config.dtype,
        weight_format=weight_format,
        quantization=config.quantization,
        prepared_cache_dir=config.prepared_cache_dir,
        tensor_parallel_size=config.tensor_parallel_size,  # each shard straight onto its device
    )


def overlap_by_default(runner) -> bool:
    """Whether `overlap=None` (auto) turns the overlapped loop on for this runner (docs/benchmarks/overlap.md)."""
    return getattr(runner, "platform", "cpu") != "cpu" and hasattr(runner, "dispatch")


def read_chat_template(path: str) -> str:
    """The template file's text; a missing or unreadable file is a ValueError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read the chat template {path!r}: {error}") from error


def make_runner(config: EngineConfig, loaded):
    """The device side: KV pool sized from the config, buckets up to the scheduler's limits, warmed up."""
    from trellis_jax.runner import Runner

    max_model_len = config.max_model_len or min(loaded.config.max_position_embeddings, DEFAULT_MAX_MODEL_LEN)
    invariant = config.deterministic and _can_be_batch_invariant(config, loaded)
    token_buckets, seq_buckets = _buckets(config, one_bucket=config.deterministic and not invariant)
    runner = Runner(
        loaded,
        page_size=config.page_size,
        num_pages=config.num_pages,
        kv_memory_bytes=config.kv_memory_bytes,
        kv_memory_fraction=config.kv_memory_fraction,
        token_buckets=token_buckets,
        seq_buckets=seq_buckets,
        max_context_len=max_model_len,
        attn_impl=config.attn_impl,
        compile_cache_dir=config.compile_cache_dir,
        unroll_layers=config.unroll_layers,
        materialise_head=config.materialise_head,
        matmul_backend=config.matmul_backend,
        kv_dtype=config.kv_cache_dtype,
        batch_invariant=invariant,
        decode_steps=config.decode_steps,
        tensor_parallel_size=config.tensor_parallel_size,
        resident_state=not config.disable_resident_state,
    )
    if config.warmup:
        runner.warmup()
    return runner


def _can_be_batch_invariant(config: EngineConfig, loaded) -> bool:
    from trellis_jax.runner.invariance import batch_invariance_problem

    problem = batch_invariance_problem(
        loaded.config,
        getattr(loaded.params["embed"], "dtype", loaded.config.dtype),
        config.kv_cache_dtype or loaded.config.dtype,
        config.page_size,
    )
    if problem:
        logger.warning(
            "deterministic mode without batch-invariant kernels (%s): one compiled bucket instead, so "
            "outputs still depend on chunking, cache hits and a row's place in the batch",
            problem,
        )
    return problem is None


def _buckets(config: EngineConfig, one_bucket: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Token buckets from the runner's smallest (2 rows) up: a decode of b sequences runs in the bucket of
    about b rows (a batch-1 decode in 2, not 8: every layer and the LM head and sampler run on its rows)."""
    from trellis_jax.runner.buckets import powers_of_two, prefill_friendly
    from trellis_jax.runner.runner import MIN_TOKEN_BUCKET

    tokens, seqs = config.max_num_batched_tokens, config.max_num_seqs
    if one_bucket:
        if config.token_buckets or config.seq_buckets:
            raise ValueError(
                "deterministic mode without batch-invariant kernels compiles one bucket; do not also "
                "give token_buckets/seq_buckets"
            )
        return (tokens,), (seqs,)
    return (
        config.token_buckets or prefill_friendly(min(MIN_TOKEN_BUCKET, tokens), tokens),
        config.seq_buckets or powers_of_two(1, seqs),
    )
