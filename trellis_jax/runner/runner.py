"""Runner: the device side of the engine. Owns the params and the KV pages; runs one `StepPlan` per call.

Contract:
  runner = Runner(model, page_size=16, num_pages=... | kv_memory_bytes=... | kv_memory_fraction=...,
                  token_buckets=..., seq_buckets=..., page_buckets=..., max_context_len=...,
                  attn_impl=None, compile_cache_dir=None, max_logprobs=20, unroll_layers=1,
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
  Runner(resident_state=True): a step of one-token sampling decodes sends per row only its slot and a new page
      (resident.py, resident_view.py): page tables, positions and sampling knobs stay on the device between
      steps; other steps pack their whole wire. `resident_stats` counts the rows of each kind.
  runner.check_plan(plan)   the host half of run (pack + encode), raising what run would; no device work
  runner.save_pages(ids) -> PageRead (.fetch() -> numpy [n, 2, L, Hkv, S, D]); runner.load_pages(ids, pages)
      whole pages to and from the host, between steps (page_io.py: the radix cache's lower tiers); a save
      queued before a step reads the pages as they were before it. warmup_page_io() compiles them ahead;
      page_load_rate() times loads (seconds per call, bytes/s).
  limits for the scheduler: max_num_tokens, max_num_seqs, max_pages_per_seq, max_context_len, num_pages
  (page 0 is the padding sink: the allocator hands out 1..num_pages-1); kv_pool.describe() for the log.
`batch_invariant=True` (`--deterministic`): a token row's floats do not depend on the rest of the step
(runner/invariance.py): every matmul through the native kernel, attention through "cpu_batch_invariant";
a ValueError says why where that cannot run here.
The step is one jitted program per bucket, forward + sampling fused, kv pages donated; compiled
executables live in a dict keyed by bucket (programs.py), so after warm-up a step never compiles
(`num_compilations` counts this runner's compilations; `compile_count.backend_compile_count()` every XLA compile). A bucket
missing at run time (no warm-up) is compiled then and counted. Plans larger than the largest bucket raise
`BucketOverflowError`: the scheduler keeps within `max_num_tokens`, `max_num_seqs` and `max_context_len`.
Nothing else may hold the KV pages: every step replaces them (the old buffers are donated).
Modules it delegates to: programs.py (compilation and warm-up), feed.py (the overlapped loop's fed tokens),
launch.py (a dispatched step and its read-back).
"""

from __future__ import annotations

import functools
import logging
import os
import time

import numpy as np

from pallas_kernels import matmul
from trellis_jax import layer_unroll
from trellis_jax.model.config import KV_DTYPES
from trellis_jax.model.kv import init_kv_pages
from trellis_jax.runner import wire
from trellis_jax.runner.buckets import Bucket, BucketSet, powers_of_two, prefill_friendly
from trellis_jax.runner.compile_cache import enable_persistent_compile_cache
from trellis_jax.runner.feed import TokenFeed
from trellis_jax.runner.invariance import INVARIANT_ATTENTION, batch_invariance_problem
from trellis_jax.runner.kv_pool import size_kv_pool
from trellis_jax.runner.launch import Launch, read_back
from trellis_jax.runner.packing import PackedStep, pack
from trellis_jax.runner.page_io import PageIO, PageRead
from trellis_jax.runner.programs import StepPrograms
from trellis_jax.runner.resident import ResidentSlots
from trellis_jax.runner.tensor_parallel import TensorParallel
from trellis_jax.step_plan import StepOutputs, StepPlan

__all__ = [
    "DEFAULT_MAX_LOGPROBS",
    "DEFAULT_SEQ_BUCKETS",
    "DEFAULT_TOKEN_BUCKETS",
    "Launch",
    "MIN_TOKEN_BUCKET",
    "Runner",
]

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
        unroll_layers: int | bool = 1,
        materialise_head: bool | None = None,
        matmul_backend: str = "auto",
        kv_dtype: str | None = None,
        fuse_projections: bool | None = None,
        pack_bf16: bool | None = None,
        pack_f32: bool | None = None,
        batch_invariant: bool = False,
        decode_steps: int = 1,
        tensor_parallel_size: int = 1,
        resident_state: bool = True,
    ):
        """`model`: a LoadedModel (anything with .config and .params) or a (config, params) pair.

        `materialise_head`, `fuse_projections`, `pack_bf16`, `pack_f32`: weight layouts for the matmul op,
        None = its choice for this machine (`pallas_kernels.matmul.prepare` documents each).
        `matmul_backend`: "auto" (timed on this machine, or $TRELLIS_MATMUL_BACKEND), "native" or "xla" for
        every matrix; installed for this process (`pallas_kernels.matmul.calibrate`) before any step is traced.
        `batch_invariant`: a token row's floats do not depend on the rest of the step (runner/invariance.py);
        attn_impl must then be None or "cpu_batch_invariant"; every matmul takes the op's native kernel.
        `decode_steps`: k > 1 also compiles, at warm-up, a k-iteration multi-step program (step.make_multi_step)
        for every decode bucket (the one a step of n one-token rows selects, n = 1..max_num_seqs); plans with
        StepPlan.decode_steps == k run it. Another k is compiled when first asked for (and counted).
        `kv_dtype`: the KV pages' dtype (None: the model's). bfloat16 pages halve the KV memory and the
        bytes a decode step reads; new K/V are rounded to it when written (attention math stays float32).
        `tensor_parallel_size`: N > 1 splits the model and the KV pages over the first N devices
        (tensor_parallel.py); the KV budget (num_pages aside) is then per device. 1: one device, as ever.
        `resident_state`: decode steps read page tables, positions and sampling knobs from rows kept on the
        device and send only what changed (resident.py); False packs every step's whole wire (for A/B runs).
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
        prepare = functools.partial(
            matmul.prepare,
            materialise_head=materialise_head,
            fuse_projections=fuse_projections,
            pack_bf16=pack_bf16,
            pack_f32=pack_f32,
            batch_invariant=self.batch_invariant,
            backend=matmul_backend,
        )
        self.tp = _tensor_parallel(self.config, tensor_parallel_size)
        if self.tp is None:
            self.params = prepare(self.params, self.config)
        else:  # split by the rules, then prepared per shard on its device
            self.params = self.tp.shard_params(self.params, prepare)
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
            self.config if self.tp is None else self.tp.local_config,  # TP: the budget is per device
            page_size=page_size,
            num_pages=num_pages,
            kv_memory_bytes=kv_memory_bytes,
            kv_memory_fraction=kv_memory_fraction,
            default_pages=1 + self.buckets.max_num_seqs * self.buckets.max_pages_per_seq,
            kv_dtype=self.kv_dtype,
        )
        logger.info("KV pool: %s", self.kv_pool.describe())
        if self.tp is None:
            self._kv = init_kv_pages(self.config, self.kv_pool.num_pages, page_size, self.kv_dtype)
        else:
            logger.info("%s", self.tp.describe_kv(self.kv_pool.num_pages, page_size, self.kv_dtype))
            self._kv = self.tp.init_kv(self.kv_pool.num_pages, page_size, self.kv_dtype)
        self.unroll_layers = layer_unroll.normalize(unroll_layers)  # ValueError for a bad spelling
        placement = None if self.tp is None else self.tp.replicated
        self._feed = TokenFeed(
            self.buckets.max_num_seqs, placement
        )  # the fed-token array every bucket reads and writes
        self._slots = ResidentSlots(  # decode rows kept on the device between steps (resident.py)
            self.buckets.max_num_seqs, self.buckets.max_pages_per_seq, placement, enabled=bool(resident_state)
        )
        self._programs = StepPrograms(
            self.config,
            attn_impl=attn_impl,
            max_logprobs=max_logprobs,
            unroll_layers=self.unroll_layers,
            batch_invariant=self.batch_invariant,
            feed_width=self.buckets.max_num_seqs,
            page_size=page_size,
            max_num_seqs=self.buckets.max_num_seqs,
            state_shape=self._slots.state_shape,
            tp=self.tp,
            executable_dir=(  # not under tensor parallelism: the cache's key does not cover the mesh
                None
                if compile_cache_dir is None or self.tp is not None
                else os.path.join(compile_cache_dir, "executables")
            ),
        )
        if isinstance(decode_steps, bool) or not isinstance(decode_steps, int) or decode_steps < 1:
            raise ValueError(f"decode_steps must be a positive int, got {decode_steps!r}")
        self.decode_steps = decode_steps
        self._page_io = PageIO()

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
    def resident_state(self) -> bool:
        """Whether decode steps read their rows from the device-resident slots (settable between steps: the
        programs are the same either way, so A/B runs share one runner)."""
        return self._slots.enabled

    @resident_state.setter
    def resident_state(self, on: bool) -> None:
        self._slots.enabled = bool(on)

    @property
    def resident_stats(self) -> dict[str, int]:
        """Resident decode steps so far and their rows: joined (whole row sent), continued (slot only), grown
        (a new page sent); all 0 with resident_state=False."""
        return dict(self._slots.stats)

    @property
    def compiled_buckets(self) -> list[Bucket]:
        return list(self._programs.executables)

    @property
    def num_compilations(self) -> int:
        """This runner's compilations: warm-up's, and those of buckets a step found uncompiled."""
        return self._programs.num_compilations

    @property
    def compile_seconds(self) -> float:
        return self._programs.compile_seconds

    @property
    def _multi_executables(self) -> dict:
        return self._programs.multi_executables

    # ---- compilation (programs.py) --------------------------------------------------------------
    def warmup(self, progress: bool = True, workers: int | None = None, decode_steps: int | None = None) -> float:
        """Compile every bucket not compiled yet, and the multi-step program of every decode bucket for
        `decode_steps` (default: the runner's; 1: none); returns the seconds spent.

        Tracing runs here, one bucket after another; the XLA compilations (which release the GIL) run on
        `workers` threads (default: one per CPU core), so warm-up scales with the cores.
        """
        steps = self.decode_steps if decode_steps is None else decode_steps
        decode_buckets = self.decode_buckets() if steps > 1 else []
        return self._programs.warmup(
            self.params, self._kv, self.buckets.all(), decode_buckets, steps, progress=progress, workers=workers
        )

    def _copy_pages(self, copies: list[tuple[int, int]]) -> None:
        if len(copies) > self.max_num_seqs or any(not 0 < p < self.num_pages for pair in copies for p in pair):
            raise ValueError(
                f"page copies must be at most {self.max_num_seqs} pairs of pages in 1..{self.num_pages - 1}, "
                f"got {copies}"
            )
        src, dst = np.zeros(self.max_num_seqs, np.int32), np.zeros(self.max_num_seqs, np.int32)
        src[: len(copies)], dst[: len(copies)] = zip(*copies)
        self._kv = self._programs.page_copier(self._kv)(self._kv, src, dst, np.int32(len(copies)))

    # ---- whole pages to and from the host (the radix cache's lower tiers; page_io.py) ------------------
    def save_pages(self, page_ids: list[int]) -> PageRead:
        """Queue a copy of these pages to the host (before the step that may overwrite them); no wait."""
        return self._page_io.save(self._kv, self._check_page_ids(page_ids))

    def load_pages(self, page_ids: list[int], pages) -> None:
        """Write host pages [n, 2, L, Hkv, S, D] into these page ids (queued; the next step reads them)."""
        self._kv = self._page_io.load(self._kv, self._check_page_ids(page_ids), np.asarray(pages))

    def warmup_page_io(self) -> None:
        """Compile save_pages / load_pages for every page count ahead (the lower tiers' engines call it)."""
        self._kv = self._page_io.warmup(self._kv)

    def page_load_rate(self, num_pages: int = 16) -> tuple[float, float]:
        """(seconds per load call, bytes/s) of host -> device page loads, fitted from the best of three timed
        loads of 1 and of `num_pages` pages into the sink page (after warmup_page_io): the reload cost model's
        fixed cost and transfer rate."""
        shape = (num_pages, 2, self.config.num_layers, self.config.num_kv_heads, self.page_size, self.config.head_dim)
        pages = np.ones(shape, self._kv.k.dtype)
        one, many = self._time_load(pages[:1]), self._time_load(pages)
        per_page = max((many - one) / (num_pages - 1), 1e-12)
        return max(one - per_page, 0.0), pages[0].nbytes / per_page

    def _time_load(self, pages: np.ndarray) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            self._kv = self._page_io.load(self._kv, [0] * len(pages), pages)
            self._kv.k.block_until_ready()
            best = min(best, time.perf_counter() - start)
        return best

    def _check_page_ids(self, page_ids) -> list[int]:
        ids = [int(p) for p in page_ids]
        if any(not 0 < p < self.num_pages for p in ids) or len(set(ids)) != len(ids):
            raise ValueError(f"page ids must be distinct, in 1..{self.num_pages - 1}: got {ids[:8]}")
        return ids

    def decode_buckets(self) -> list[Bucket]:
        """The buckets a decode-only step selects (n one-token rows, n = 1..max_num_seqs), per page bucket."""
        found = {
            self.buckets.select(n, n, pages)
            for n in range(1, self.max_num_seqs + 1)
            for pages in self.buckets.page_buckets
        }
        return sorted(found)

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
        resident = self._slots.prepare(
            plan,
            self._pack,
            self.buckets,
            page_size=self.page_size,
            num_pages=self.num_pages,
            vocab_size=self.config.vocab_size,
            max_context_len=self.max_context_len,
        )
        packed = self._pack(plan) if resident is None else resident.packed
        feed = self._feed_column(packed)
        if resident is None:  # a full step; its sampling rows are stored in slots for their next decodes
            resident = self._slots.full_step(plan, packed, self.page_size)
            wire_buffers = wire.encode(packed.model_inputs, packed.knobs, feed, resident and resident.joins)
        executable = self._programs.executable(packed.bucket, plan.decode_steps, self.params, self._kv)
        if plan.page_copies:  # after pack validated the plan, before the step reads the pages
            self._copy_pages(plan.page_copies)
        if resident is not None and resident.tokens is not None:
            wire_buffers = self._slots.upload(resident, feed)
        carried = (self._feed.device_tokens(), self._slots.device_state())
        outputs, self._kv, (fed, state) = executable(
            self.params, self._kv, *self._inputs(packed, wire_buffers), carried
        )
        self._feed.record(fed, packed)
        self._slots.record(state, resident)
        return Launch(packed, outputs, plan.decode_steps)

    def collect(self, launch: Launch) -> StepOutputs:
        """Wait for a dispatched step and read its sampled tokens back (every iteration's, multi-step)."""
        return read_back(launch)

    def check_plan(self, plan: StepPlan) -> None:
        """Pack and encode `plan` on the host as run() would, raising what run() raises before it touches the
        device (a bad id, page or knob; a value the wire cannot carry; a pending token with nothing to feed
        it). No device work, nothing changes: the engine checks a failed step's rows one by one with it to
        find the request at fault."""
        packed = self._pack(plan)
        wire.encode(packed.model_inputs, packed.knobs, self._feed_column(packed))

    def _feed_column(self, packed: PackedStep) -> np.ndarray:
        return self._feed.column(packed)

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

    def _inputs(self, packed: PackedStep, wire_buffers: tuple | None = None) -> tuple:
        """The step's arguments after (params, kv_pages), less the carried pair: the two wire buffers (default:
        the packed step's whole wire), the penalty arrays and the constraint arrays (the device-resident neutral
        ones where no row needs them: nothing uploaded)."""
        rows = packed.bucket.num_seqs
        counts, prompt_mask = packed.penalties or self._programs.zero_penalty_arrays(rows)
        bitmask, logit_bias = self._programs.neutral_constraints(rows)
        bitmask = bitmask if packed.bitmask is None else packed.bitmask
        logit_bias = logit_bias if packed.logit_bias is None else packed.logit_bias
        wire_buffers = wire_buffers or wire.encode(packed.model_inputs, packed.knobs)
        return (*wire_buffers, counts, prompt_mask, bitmask, logit_bias)


def _invariant_attention(config, dtype, kv_dtype, page_size, attn_impl) -> str:
    """The attention backend of a batch-invariant runner; ValueError where this machine cannot run one."""
    problem = batch_invariance_problem(config, dtype, kv_dtype, page_size)
    if problem:
        raise ValueError(f"batch_invariant=True cannot run here: {problem}")
    if attn_impl not in (None, INVARIANT_ATTENTION):
        raise ValueError(f"batch_invariant=True uses attention {INVARIANT_ATTENTION!r}, not {attn_impl!r}")
    return INVARIANT_ATTENTION


def _tensor_parallel(config, size):
    """None for one device (today's path, unchanged), else the TensorParallel plan; ValueError for a bad size."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"tensor_parallel_size must be a positive int, got {size!r}")
    return None if size == 1 else TensorParallel.create(config, size)


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
