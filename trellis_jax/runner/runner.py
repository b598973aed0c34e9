"""Runner: the device side of the engine. Owns the params and the KV pages; runs one `StepPlan` per call.

Contract:
  runner = Runner(model, page_size=16, num_pages=... | kv_memory_bytes=... | kv_memory_fraction=...,
                  token_buckets=..., seq_buckets=..., page_buckets=..., max_context_len=...,
                  attn_impl=None, compile_cache_dir=None, max_logprobs=20, unroll_layers=False,
                  materialise_head=None, batch_invariant=False)
  runner.warmup(progress=True, workers=None, decode_steps=None)   compiles every bucket ahead of time
      (and the multi-step programs for decode_steps, default the runner's); idempotent
  runner.run(plan) -> StepOutputs                 each call bumps runner.kv_generation by one
  runner.dispatch(plan) -> Launch; runner.collect(launch) -> StepOutputs    run() in two halves: dispatch
      returns once the step is queued on the device; collect waits for it and reads its tokens back. A
      PENDING_TOKEN row takes the token the previous dispatch sampled for its request id, on the device
      (ValueError if that step sampled none for it): the overlapped engine loop.
  Runner(decode_steps=k): plans with StepPlan.decode_steps == k run k decode iterations in one device call
      (step.make_multi_step; compiled at warm-up for each decode bucket) and collect returns k tokens per row.
  runner.check_plan(plan)   the host half of run (pack + encode), raising what run would; no device work
  limits for the scheduler: max_num_tokens, max_num_seqs, max_pages_per_seq, max_context_len, num_pages
  (page 0 is the padding sink: the allocator hands out 1..num_pages-1); kv_pool.describe() for the log.
`batch_invariant=True` (`--deterministic`): a token row's floats do not depend on the rest of the step
(runner/invariance.py): every matmul through the native kernel, attention through "cpu_batch_invariant";
a ValueError says why where that cannot run here.
The step is one jitted program per bucket, forward + sampling fused, kv pages donated; compiled
executables live in a dict keyed by bucket, so after warm-up a step never compiles (`num_compilations`
counts this runner's compilations; `compile_count.backend_compile_count()` every XLA compile). A bucket
missing at run time (no warm-up) is compiled then and counted. Plans larger than the largest bucket raise
`BucketOverflowError`: the scheduler keeps within `max_num_tokens`, `max_num_seqs` and `max_context_len`.
Nothing else may hold the KV pages: every step replaces them (the old buffers are donated).
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from pallas_kernels import matmul
from trellis_jax.model.config import KV_DTYPES
from trellis_jax.model.kv import copy_pages, init_kv_pages
from trellis_jax.runner import wire
from trellis_jax.runner.buckets import Bucket, BucketSet, powers_of_two, prefill_friendly
from trellis_jax.runner.compile_cache import enable_persistent_compile_cache
from trellis_jax.runner.constraints import neutral_bitmask, neutral_logit_bias
from trellis_jax.runner.invariance import INVARIANT_ATTENTION, batch_invariance_problem
from trellis_jax.runner.kv_pool import size_kv_pool
from trellis_jax.runner.packing import PackedStep, pack
from trellis_jax.runner.sampling import SamplerOutputs
from trellis_jax.runner.step import abstract_inputs, make_multi_step, make_step
from trellis_jax.step_plan import SampledToken, StepOutputs, StepPlan

logger = logging.getLogger(__name__)

# Smallest token bucket is 2: with one token row XLA rewrites the KV scatter into a dynamic-update-slice
# and copies the whole KV pool once per layer (measured: a batch-1 decode step took seconds, not ms).
MIN_TOKEN_BUCKET = 2
DEFAULT_TOKEN_BUCKETS = prefill_friendly(2, 1024)
DEFAULT_SEQ_BUCKETS = powers_of_two(1, 32)
DEFAULT_MAX_LOGPROBS = 20


class Runner:
    """Params + KV pages + one compiled step per bucket. Not thread-safe: one `run` at a time."""

    def __init__(
        self,
        model,
        *,
        page_size: int = 16,
        num_pages: int | None = None,
        kv_memory_bytes: int | None = None,
        kv_memory_fraction: float | None = None,
        token_buckets=DEFAULT_TOKEN_BUCKETS,
        seq_buckets=DEFAULT_SEQ_BUCKETS,
        page_buckets=None,
        max_context_len: int | None = None,
        attn_impl: str | None = None,
        compile_cache_dir: str | None = None,
        max_logprobs: int = DEFAULT_MAX_LOGPROBS,
        unroll_layers: bool = False,
        materialise_head: bool | None = None,
        kv_dtype: str | None = None,
        fuse_projections: bool | None = None,
        pack_bf16: bool | None = None,
        pack_f32: bool | None = None,
        batch_invariant: bool = False,
        decode_steps: int = 1,
    ):
        """`model`: a LoadedModel (anything with .config and .params) or a (config, params) pair.

        `materialise_head`, `fuse_projections`, `pack_bf16`, `pack_f32`: weight layouts for the matmul op,
        None = its choice for this machine (`pallas_kernels.matmul.prepare` documents each).
        `batch_invariant`: a token row's floats do not depend on the rest of the step (runner/invariance.py);
        attn_impl must then be None or "cpu_batch_invariant"; every matmul takes the op's native kernel.
        `decode_steps`: k > 1 also compiles, at warm-up, a k-iteration multi-step program (step.make_multi_step)
        for every decode bucket (the one a step of n one-token rows selects, n = 1..max_num_seqs); plans with
        StepPlan.decode_steps == k run it. Another k is compiled when first asked for (and counted).
        `kv_dtype`: the KV pages' dtype (None: the model's). bfloat16 pages halve the KV memory and the
        bytes a decode step reads; new K/V are rounded to it when written (attention math stays float32).
        """
        self.config, self.params = _unpack_model(model)
        self.kv_dtype = _check_kv_dtype(kv_dtype or self.config.dtype)
        self.batch_invariant = bool(batch_invariant)
        if self.batch_invariant:
            attn_impl = _invariant_attention(
                self.config,
                getattr(self.params["embed"], "dtype", self.config.dtype),
                self.kv_dtype,
                page_size,
                attn_impl,
            )
        self.params = matmul.prepare(
            self.params,
            self.config,
            materialise_head=materialise_head,
            fuse_projections=fuse_projections,
            pack_bf16=pack_bf16,
            pack_f32=pack_f32,
            batch_invariant=self.batch_invariant,
        )
        self.page_size = page_size
        self.kv_generation = 0  # bumped by every run(): whoever shares the runner can tell its pages were rewritten
        self.max_context_len = max_context_len or self.config.max_position_embeddings
        max_pages = -(-self.max_context_len // page_size)
        self.buckets = BucketSet(tuple(token_buckets), tuple(seq_buckets), tuple(page_buckets or (max_pages,)))
        if self.buckets.token_buckets[0] < MIN_TOKEN_BUCKET:
            raise ValueError(
                f"token buckets must be >= {MIN_TOKEN_BUCKET} (a one-row step makes XLA copy the "
                f"whole KV pool per layer), got {self.buckets.token_buckets}"
            )
        if self.buckets.max_pages_per_seq * page_size < self.max_context_len:
            raise ValueError(
                f"page_buckets top out at {self.buckets.max_pages_per_seq} pages of {page_size} "
                f"tokens, less than max_context_len={self.max_context_len}"
            )
        if not 0 <= max_logprobs <= self.config.vocab_size:
            raise ValueError(f"max_logprobs must be in [0, vocab_size], got {max_logprobs}")
        self.max_logprobs = max_logprobs
        self.attn_impl = attn_impl
        if compile_cache_dir is not None:
            enable_persistent_compile_cache(compile_cache_dir)
        self.kv_pool = size_kv_pool(
            self.config,
            page_size=page_size,
            num_pages=num_pages,
            kv_memory_bytes=kv_memory_bytes,
            kv_memory_fraction=kv_memory_fraction,
            default_pages=1 + self.buckets.max_num_seqs * self.buckets.max_pages_per_seq,
            kv_dtype=self.kv_dtype,
        )
        logger.info("KV pool: %s", self.kv_pool.describe())
        self._kv = init_kv_pages(self.config, self.kv_pool.num_pages, page_size, self.kv_dtype)
        self.unroll_layers = bool(unroll_layers)
        self._feed_width = self.buckets.max_num_seqs  # the fed-token array every bucket reads and writes
        self._jitted_step = jax.jit(
            make_step(self.config, attn_impl, max_logprobs, self.unroll_layers, self.batch_invariant, self._feed_width),
            donate_argnums=(1,),
        )
        self._fed: jax.Array | None = None  # the last dispatched step's sampled ids, on the device
        self._fed_rows: dict[str, int] = {}  # request id -> its row in self._fed
        self._executables: dict[Bucket, jax.stages.Compiled] = {}
        if isinstance(decode_steps, bool) or not isinstance(decode_steps, int) or decode_steps < 1:
            raise ValueError(f"decode_steps must be a positive int, got {decode_steps!r}")
        self.decode_steps = decode_steps
        self._multi_jitted: dict[int, object] = {}  # k -> the jitted k-iteration step
        self._multi_executables: dict[tuple[Bucket, int], jax.stages.Compiled] = {}
        self._copier: jax.stages.Compiled | None = None  # copy_pages for up to max_num_seqs copies a step
        self._zero_penalties: dict[int, tuple[jax.Array, jax.Array]] = {}
        self._no_constraints: dict[int, tuple[jax.Array, jax.Array]] = {}
        self.num_compilations = 0
        self.compile_seconds = 0.0

    # ---- limits the scheduler must respect ------------------------------------------------------
    @property
    def max_num_tokens(self) -> int:
        return self.buckets.max_num_tokens

    @property
    def max_num_seqs(self) -> int:
        return self.buckets.max_num_seqs

    @property
    def max_pages_per_seq(self) -> int:
        return self.buckets.max_pages_per_seq

    @property
    def num_pages(self) -> int:
        """Pages in the pool, including the sink page 0 (the allocator hands out 1..num_pages-1)."""
        return self.kv_pool.num_pages

    @property
    def platform(self) -> str:
        """Where the steps run: "cpu", "gpu", ... (the KV pages' device)."""
        return next(iter(self._kv.k.devices())).platform

    @property
    def compiled_buckets(self) -> list[Bucket]:
        return list(self._executables)

    # ---- compilation ----------------------------------------------------------------------------
    def warmup(self, progress: bool = True, workers: int | None = None, decode_steps: int | None = None) -> float:
        """Compile every bucket not compiled yet, and the multi-step program of every decode bucket for
        `decode_steps` (default: the runner's; 1: none); returns the seconds spent.

        Tracing runs here, one bucket after another; the XLA compilations (which release the GIL) run on
        `workers` threads (default: one per CPU core), so warm-up scales with the cores.
        """
        start = time.perf_counter()
        missing = [(b, 1) for b in self.buckets.all() if b not in self._executables]
        steps = self.decode_steps if decode_steps is None else decode_steps
        if steps > 1:
            missing += [(b, steps) for b in self.decode_buckets()]
            missing = [key for key in missing if key[1] == 1 or key not in self._multi_executables]
        workers = max(1, min(workers or os.cpu_count() or 1, len(missing) or 1))
        with (
            ThreadPoolExecutor(workers) as pool,
            tqdm(total=len(missing), desc="compiling step buckets", unit="bucket", disable=not progress) as bar,
        ):
            futures = {pool.submit(self._lower(*key).compile): key for key in missing}
            for future in as_completed(futures):
                self._store(*futures[future], future.result())
                bar.update()
        self._page_copier()
        self.compile_seconds += time.perf_counter() - start
        return time.perf_counter() - start

    def _page_copier(self) -> jax.stages.Compiled:
        """copy_pages compiled once for max_num_seqs copies (a step admits at most that many requests)."""
        if self._copier is None:
            index = jax.ShapeDtypeStruct((self.max_num_seqs,), jnp.int32)
            count = jax.ShapeDtypeStruct((), jnp.int32)
            self._copier = jax.jit(copy_pages, donate_argnums=(0,)).lower(self._kv, index, index, count).compile()
        return self._copier

    def _copy_pages(self, copies: list[tuple[int, int]]) -> None:
        if len(copies) > self.max_num_seqs or any(not 0 < p < self.num_pages for pair in copies for p in pair):
            raise ValueError(
                f"page copies must be at most {self.max_num_seqs} pairs of pages in 1..{self.num_pages - 1}, "
                f"got {copies}"
            )
        src, dst = np.zeros(self.max_num_seqs, np.int32), np.zeros(self.max_num_seqs, np.int32)
        src[: len(copies)], dst[: len(copies)] = zip(*copies)
        self._kv = self._page_copier()(self._kv, src, dst, np.int32(len(copies)))

    def decode_buckets(self) -> list[Bucket]:
        """The buckets a decode-only step selects (n one-token rows, n = 1..max_num_seqs), per page bucket."""
        found = {
            self.buckets.select(n, n, pages)
            for n in range(1, self.max_num_seqs + 1)
            for pages in self.buckets.page_buckets
        }
        return sorted(found)

    def _lower(self, bucket: Bucket, steps: int = 1) -> jax.stages.Lowered:
        abstract = abstract_inputs(bucket, self.config.vocab_size, self._feed_width)
        return self._jitted(steps).lower(self.params, self._kv, *abstract)

    def _jitted(self, steps: int):
        """The jitted step (steps=1) or the jitted `steps`-iteration multi-step program."""
        if steps == 1:
            return self._jitted_step
        if steps not in self._multi_jitted:
            self._multi_jitted[steps] = jax.jit(
                make_multi_step(
                    self.config,
                    self.attn_impl,
                    self.max_logprobs,
                    self.unroll_layers,
                    self.batch_invariant,
                    self._feed_width,
                    page_size=self.page_size,
                    num_steps=steps,
                ),
                donate_argnums=(1,),
            )
        return self._multi_jitted[steps]

    def _compile(self, bucket: Bucket, steps: int = 1) -> jax.stages.Compiled:
        """Compile one bucket now (a run() that found no executable for its bucket)."""
        start = time.perf_counter()
        executable = self._store(bucket, steps, self._lower(bucket, steps).compile())
        self.compile_seconds += time.perf_counter() - start
        return executable

    def _executable(self, bucket: Bucket, steps: int) -> jax.stages.Compiled:
        found = self._executables.get(bucket) if steps == 1 else self._multi_executables.get((bucket, steps))
        return found or self._compile(bucket, steps)

    def _store(self, bucket: Bucket, steps: int, executable: jax.stages.Compiled) -> jax.stages.Compiled:
        if steps == 1:
            self._executables[bucket] = executable
        else:
            self._multi_executables[(bucket, steps)] = executable
        self.num_compilations += 1
        self._zero_penalty_arrays(bucket.num_seqs)
        self._neutral_constraints(bucket.num_seqs)
        return executable

    def _zero_penalty_arrays(self, rows: int) -> tuple[jax.Array, jax.Array]:
        """Device-resident 'no penalty' counts per row count, made once (device_put: no compile)."""
        if rows not in self._zero_penalties:
            vocab = self.config.vocab_size
            self._zero_penalties[rows] = (
                jax.device_put(np.zeros((rows, vocab), np.int32)),
                jax.device_put(np.zeros((rows, vocab), np.bool_)),
            )
        return self._zero_penalties[rows]

    def _neutral_constraints(self, rows: int) -> tuple[jax.Array, jax.Array]:
        """Device-resident all-ones bitmask and empty logit_bias per row count (constraints.py), made once."""
        if rows not in self._no_constraints:
            self._no_constraints[rows] = (
                jax.device_put(neutral_bitmask(rows, self.config.vocab_size)),
                jax.device_put(neutral_logit_bias(rows)),
            )
        return self._no_constraints[rows]

    # ---- stepping -------------------------------------------------------------------------------
    def run(self, plan: StepPlan) -> StepOutputs:
        """Run one step: write the plan's KV, sample for sequences with sample=True. Bumps `kv_generation` by
        one first, even if the step then fails (it may have written pages)."""
        return self.collect(self.dispatch(plan))

    def dispatch(self, plan: StepPlan) -> Launch:
        """Queue one step on the device and return without waiting for it (as run(), less the read-back).
        Raises what run() raises before the device is touched (then the fed tokens stay those of the last
        step that was dispatched)."""
        self.kv_generation += 1
        packed = self._pack(plan)
        feed = self._feed_column(packed)
        executable = self._executable(packed.bucket, plan.decode_steps)
        if plan.page_copies:  # after pack validated the plan, before the step reads the pages
            self._copy_pages(plan.page_copies)
        outputs, self._kv, self._fed = executable(
            self.params, self._kv, *self._inputs(packed, feed), self._fed_tokens()
        )
        self._fed_rows = {request_id: row for row, request_id, _ in packed.sampled_rows}
        return Launch(packed, outputs, plan.decode_steps)

    def collect(self, launch: Launch) -> StepOutputs:
        """Wait for a dispatched step and read its sampled tokens back (every iteration's, multi-step)."""
        outputs = _to_host(launch.outputs)
        if launch.steps == 1:
            return _step_outputs(launch.packed, outputs)
        per_step = [_step_outputs(launch.packed, SamplerOutputs(*(a[i] for a in outputs))) for i in range(launch.steps)]
        more = {rid: [later.tokens[rid] for later in per_step[1:]] for rid in per_step[0].tokens}
        return StepOutputs(per_step[0].tokens, more)

    def check_plan(self, plan: StepPlan) -> None:
        """Pack and encode `plan` on the host as run() would, raising what run() raises before it touches the
        device (a bad id, page or knob; a value the wire cannot carry; a pending token with nothing to feed
        it). No device work, nothing changes: the engine checks a failed step's rows one by one with it to
        find the request at fault."""
        packed = self._pack(plan)
        wire.encode(packed.model_inputs, packed.knobs, self._feed_column(packed))

    def _feed_column(self, packed: PackedStep) -> np.ndarray:
        """[T] int32: for each PENDING_TOKEN row its request's row in the last dispatched step's tokens, else -1."""
        feed = np.full(packed.bucket.num_tokens, -1, np.int32)
        for token_row, request_id in packed.pending_rows:
            if request_id not in self._fed_rows:
                raise ValueError(f"request {request_id!r}: a pending token, but the previous step sampled none for it")
            feed[token_row] = self._fed_rows[request_id]
        return feed

    def _fed_tokens(self) -> jax.Array:
        """The previous step's fed ids (device-resident zeros before the first step)."""
        if self._fed is None:
            self._fed = jax.device_put(np.zeros(self._feed_width, np.int32))
        return self._fed

    def _pack(self, plan: StepPlan) -> PackedStep:
        return pack(
            plan,
            self.buckets,
            page_size=self.page_size,
            num_pages=self.num_pages,
            vocab_size=self.config.vocab_size,
            max_logprobs=self.max_logprobs,
            max_context_len=self.max_context_len,
        )

    def _inputs(self, packed: PackedStep, feed: np.ndarray | None = None) -> tuple:
        """The step's arguments after (params, kv_pages), less the fed tokens: the two wire buffers, the
        penalty arrays and the constraint arrays (the device-resident neutral ones where no row needs them:
        nothing uploaded)."""
        rows = packed.bucket.num_seqs
        counts, prompt_mask = packed.penalties or self._zero_penalty_arrays(rows)
        bitmask, logit_bias = self._neutral_constraints(rows)
        bitmask = bitmask if packed.bitmask is None else packed.bitmask
        logit_bias = logit_bias if packed.logit_bias is None else packed.logit_bias
        return (*wire.encode(packed.model_inputs, packed.knobs, feed), counts, prompt_mask, bitmask, logit_bias)


class Launch(NamedTuple):
    """A dispatched step: its packing (which row is whose) and its outputs, still on the device."""

    packed: PackedStep
    outputs: SamplerOutputs
    steps: int = 1  # the plan's decode_steps: outputs stacked [steps, ...] when > 1


def _to_host(outputs: SamplerOutputs) -> SamplerOutputs:
    """The sampler's arrays as numpy (waits for the step). np.asarray per array: jax.device_get took ~0.26 ms
    for these four tiny arrays on CPU, np.asarray ~0.06 ms (~2 % of a bf16 decode step)."""
    return SamplerOutputs(*(np.asarray(array) for array in outputs))


def _step_outputs(packed: PackedStep, outputs: SamplerOutputs) -> StepOutputs:
    tokens = {}
    for row, request_id, num_logprobs in packed.sampled_rows:
        top = [
            (int(t), float(lp))
            for t, lp in zip(outputs.top_token_ids[row, :num_logprobs], outputs.top_logprobs[row, :num_logprobs])
        ]
        tokens[request_id] = SampledToken(int(outputs.token_ids[row]), float(outputs.logprobs[row]), top)
    return StepOutputs(tokens)


def _invariant_attention(config, dtype, kv_dtype, page_size, attn_impl) -> str:
    """The attention backend of a batch-invariant runner; ValueError where this machine cannot run one."""
    problem = batch_invariance_problem(config, dtype, kv_dtype, page_size)
    if problem:
        raise ValueError(f"batch_invariant=True cannot run here: {problem}")
    if attn_impl not in (None, INVARIANT_ATTENTION):
        raise ValueError(f"batch_invariant=True uses attention {INVARIANT_ATTENTION!r}, not {attn_impl!r}")
    return INVARIANT_ATTENTION


def _check_kv_dtype(dtype) -> str:
    name = str(dtype)
    if name not in KV_DTYPES:
        raise ValueError(f"kv_dtype must be one of {KV_DTYPES}, got {dtype!r}")
    return name


def _unpack_model(model):
    if hasattr(model, "config") and hasattr(model, "params"):
        return model.config, model.params
    if isinstance(model, tuple) and len(model) == 2:
        return model
    raise TypeError(f"Runner needs a LoadedModel or a (config, params) pair, got {type(model).__name__}")
