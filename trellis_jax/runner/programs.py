"""The runner's compiled programs: what is compiled, when, and the device-resident inputs made with them.

Contract:
  programs = StepPrograms(config, attn_impl=, max_logprobs=, unroll_layers=, batch_invariant=, feed_width=,
                          page_size=, max_num_seqs=, state_shape=, tp=None,
                          executable_dir=None)
      tp: a TensorParallel (tensor_parallel.py): every program then runs per shard under shard_map over its
      mesh, with one shard's config, and the device-resident inputs are placed whole on every device
      executable_dir: where compiled programs are serialized and loaded back (executable_cache.py); not
      under tensor parallelism, whose programs are keyed by their mesh too
  programs.warmup(params, kv, buckets, decode_buckets, steps, progress=, workers=)   compiles what is missing
  programs.executable(bucket, steps, params, kv)   the compiled step (steps=1) or `steps`-iteration multi-step
      program for a bucket, compiled now (and counted) if warm-up did not
  programs.page_copier(kv)                          copy_pages compiled once for max_num_seqs copies
  programs.zero_penalty_arrays(rows), programs.neutral_constraints(rows)   made once per row count, on store
  programs.executables / multi_executables / num_compilations / compile_seconds
Lowering reads only the shapes of `params` and `kv` (the Runner's; it owns and replaces them every step).
`executable_dir`: step programs are also kept there serialized (executable_cache.py), keyed by everything
they depend on, so a later process loads them instead of tracing and compiling; loaded ones count in
`num_loaded`, not in `num_compilations`.
The jitted programs donate the KV pages (argument 1) and the carried (fed tokens, resident state) pair (8).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from trellis_jax.model.kv import copy_pages
from trellis_jax.model.logical_axes import TP
from trellis_jax.runner.buckets import Bucket
from trellis_jax.runner.constraints import neutral_bitmask, neutral_logit_bias
from trellis_jax.runner.executable_cache import ExecutableCache, compile_fresh, fingerprint
from trellis_jax.runner.step import abstract_inputs, make_multi_step, make_step


class StepPrograms:
    """One compiled step per bucket, one multi-step program per (bucket, k), the page copier."""

    def __init__(
        self,
        config,
        *,
        attn_impl: str | None,
        max_logprobs: int,
        unroll_layers: int,
        batch_invariant: bool,
        feed_width: int,
        page_size: int,
        max_num_seqs: int,
        state_shape: tuple[int, int],
        tp=None,
        executable_dir: str | None = None,
    ) -> None:
        self.config = config
        self.tp = tp
        self.placement = None if tp is None else tp.replicated  # where the step's whole inputs live
        self.attn_impl = attn_impl
        self.max_logprobs = max_logprobs
        self.unroll_layers = unroll_layers
        self.batch_invariant = batch_invariant
        self.feed_width = feed_width
        self.page_size = page_size
        self.max_num_seqs = max_num_seqs
        self.state_shape = tuple(state_shape)  # the resident slot state (resident_view.initial_state)
        self._jitted_step = self._jit(
            make_step(
                self._step_config,
                attn_impl,
                max_logprobs,
                unroll_layers,
                batch_invariant,
                feed_width,
                self._tp_axis,
                page_size=page_size,
            )
        )
        self._multi_jitted: dict[int, object] = {}  # k -> the jitted k-iteration step
        self.executables: dict[Bucket, jax.stages.Compiled] = {}
        self.multi_executables: dict[tuple[Bucket, int], jax.stages.Compiled] = {}
        self._copier: jax.stages.Compiled | None = None  # copy_pages for up to max_num_seqs copies a step
        self._zero_penalties: dict[int, tuple[jax.Array, jax.Array]] = {}
        self._no_constraints: dict[int, tuple[jax.Array, jax.Array]] = {}
        self.num_compilations = 0
        self.num_loaded = 0
        self.compile_seconds = 0.0
        self._executable_dir = executable_dir if tp is None else None  # the key does not cover a mesh
        self._saved: ExecutableCache | None = None  # made at the first lowering: its key reads params' shapes

    @property
    def _step_config(self):
        return self.config if self.tp is None else self.tp.local_config

    @property
    def _tp_axis(self) -> str | None:
        return None if self.tp is None else TP

    def _jit(self, step):
        """jit with the KV pages and the carried (fed tokens, resident state) donated; under tensor parallelism,
        run per shard with fixed placements."""
        if self.tp is None:
            return jax.jit(step, donate_argnums=(1, 8))
        whole = self.tp.replicated
        return jax.jit(
            self.tp.wrap(step),
            donate_argnums=(1, 8),
            in_shardings=(self.tp.params_sharding, self.tp.kv_sharding, *([whole] * 7)),
            out_shardings=(whole, self.tp.kv_sharding, whole),
        )

    def warmup(
        self,
        params,
        kv,
        buckets: Iterable[Bucket],
        decode_buckets: Iterable[Bucket],
        steps: int,
        *,
        progress: bool,
        workers: int | None,
    ) -> float:
        """Compile every bucket in `buckets` not compiled yet, and (steps > 1) the `steps`-iteration program of
        every decode bucket, then the page copier; returns the seconds spent.

        Tracing runs here, one bucket after another; the XLA compilations (which release the GIL) run on
        `workers` threads (default: one per CPU core), so warm-up scales with the cores.
        """
        start = time.perf_counter()
        missing = [(b, 1) for b in buckets if b not in self.executables]
        if steps > 1:
            missing += [(b, steps) for b in decode_buckets]
            missing = [key for key in missing if key[1] == 1 or key not in self.multi_executables]
        missing = [key for key in missing if not self._load_saved(*key, params, kv)]
        workers = max(1, min(workers or os.cpu_count() or 1, len(missing) or 1))
        with (
            ThreadPoolExecutor(workers) as pool,
            tqdm(total=len(missing), desc="compiling step buckets", unit="bucket", disable=not progress) as bar,
        ):
            futures = {pool.submit(compile_fresh, self._lower(*key, params, kv)): key for key in missing}
            for future in as_completed(futures):
                executable, fresh = future.result()
                self._store(*futures[future], executable)
                if fresh:
                    self._save(*futures[future], params, kv)
                bar.update()
        self.page_copier(kv)
        self.compile_seconds += time.perf_counter() - start
        return time.perf_counter() - start

    def page_copier(self, kv) -> jax.stages.Compiled:
        """copy_pages compiled once for max_num_seqs copies (a step admits at most that many requests)."""
        if self._copier is None:
            name = f"copy-pages-{self.max_num_seqs}"  # serialized beside the steps once warm-up keyed them
            self._copier = self._saved.load(name) if self._saved is not None else None
            if self._copier is None:
                index = jax.ShapeDtypeStruct((self.max_num_seqs,), jnp.int32)
                count = jax.ShapeDtypeStruct((), jnp.int32)
                copier = copy_pages if self.tp is None else self.tp.wrap_kv_only(copy_pages)
                lowered = jax.jit(copier, donate_argnums=(0,)).lower(kv, index, index, count)
                self._copier, fresh = compile_fresh(lowered)
                if self._saved is not None and fresh:
                    self._saved.save(name, self._copier)
        return self._copier

    def executable(self, bucket: Bucket, steps: int, params, kv) -> jax.stages.Compiled:
        found = self.executables.get(bucket) if steps == 1 else self.multi_executables.get((bucket, steps))
        if found is None and self._load_saved(bucket, steps, params, kv):
            return self.executable(bucket, steps, params, kv)
        return found or self._compile(bucket, steps, params, kv)

    def _lower(self, bucket: Bucket, steps: int, params, kv) -> jax.stages.Lowered:
        abstract = abstract_inputs(bucket, self.config.vocab_size, self.feed_width, self.state_shape)
        return self._jitted(steps).lower(params, kv, *abstract)

    def _jitted(self, steps: int):
        """The jitted step (steps=1) or the jitted `steps`-iteration multi-step program."""
        if steps == 1:
            return self._jitted_step
        if steps not in self._multi_jitted:
            self._multi_jitted[steps] = self._jit(
                make_multi_step(
                    self._step_config,
                    self.attn_impl,
                    self.max_logprobs,
                    self.unroll_layers,
                    self.batch_invariant,
                    self.feed_width,
                    page_size=self.page_size,
                    num_steps=steps,
                    tp_axis=self._tp_axis,
                )
            )
        return self._multi_jitted[steps]

    def _compile(self, bucket: Bucket, steps: int, params, kv) -> jax.stages.Compiled:
        """Compile one bucket now (a run() that found no executable for its bucket)."""
        start = time.perf_counter()
        executable, fresh = compile_fresh(self._lower(bucket, steps, params, kv))
        self._store(bucket, steps, executable)
        self.compile_seconds += time.perf_counter() - start
        if fresh:
            self._save(bucket, steps, params, kv)
        return executable

    # ---- serialized executables (executable_cache.py) ------------------------------------------
    def _saved_cache(self, params, kv) -> ExecutableCache | None:
        if self._executable_dir is None:
            return None
        if self._saved is None:
            shapes = jax.tree.map(lambda a: (a.shape, str(a.dtype)), (params, kv))
            key = fingerprint(
                self.config,
                self.attn_impl,
                self.max_logprobs,
                self.unroll_layers,
                self.batch_invariant,
                self.feed_width,
                self.page_size,
                self.max_num_seqs,
                self.state_shape,
                jax.tree.structure((params, kv)),
                jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(x, tuple)),
            )
            self._saved = ExecutableCache(self._executable_dir, key)
        return self._saved

    @staticmethod
    def _name(bucket: Bucket, steps: int) -> str:
        return f"step-t{bucket.num_tokens}-s{bucket.num_seqs}-p{bucket.pages_per_seq}-k{steps}"

    def _load_saved(self, bucket: Bucket, steps: int, params, kv) -> bool:
        """Whether the program was found serialized and is now stored (counted in num_loaded)."""
        cache = self._saved_cache(params, kv)
        executable = cache.load(self._name(bucket, steps)) if cache is not None else None
        if executable is None:
            return False
        self._store(bucket, steps, executable, compiled=False)
        return True

    def _save(self, bucket: Bucket, steps: int, params, kv) -> None:
        cache = self._saved_cache(params, kv)
        if cache is not None:
            found = self.executables[bucket] if steps == 1 else self.multi_executables[(bucket, steps)]
            cache.save(self._name(bucket, steps), found)

    def _store(
        self, bucket: Bucket, steps: int, executable: jax.stages.Compiled, *, compiled: bool = True
    ) -> jax.stages.Compiled:
        if steps == 1:
            self.executables[bucket] = executable
        else:
            self.multi_executables[(bucket, steps)] = executable
        if compiled:
            self.num_compilations += 1
        else:
            self.num_loaded += 1
        self.zero_penalty_arrays(bucket.num_seqs)
        self.neutral_constraints(bucket.num_seqs)
        return executable

    def zero_penalty_arrays(self, rows: int) -> tuple[jax.Array, jax.Array]:
        """Device-resident 'no penalty' counts per row count, made once (device_put: no compile)."""
        if rows not in self._zero_penalties:
            vocab = self.config.vocab_size
            self._zero_penalties[rows] = (
                jax.device_put(np.zeros((rows, vocab), np.int32), self.placement),
                jax.device_put(np.zeros((rows, vocab), np.bool_), self.placement),
            )
        return self._zero_penalties[rows]

    def neutral_constraints(self, rows: int) -> tuple[jax.Array, jax.Array]:
        """Device-resident all-ones bitmask and empty logit_bias per row count (constraints.py), made once."""
        if rows not in self._no_constraints:
            self._no_constraints[rows] = (
                jax.device_put(neutral_bitmask(rows, self.config.vocab_size), self.placement),
                jax.device_put(neutral_logit_bias(rows), self.placement),
            )
        return self._no_constraints[rows]
