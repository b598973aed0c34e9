"""The matmul op's backend, and `auto`'s dtype, chosen by timing them on this machine.

Contract:
  `apply(params, dtype, *, batch_invariant=False, pin=None, measure=None) -> dict[Entry, str]`: what
      `api.prepare` runs on the tree it prepared (matmul inputs in `dtype`); installs its choices in
      choices.py before any step is traced (so nothing recompiles) and returns them.
      - The pin first (`pinned(pin)`: `pin` unless None or "auto", else $TRELLIS_MATMUL_BACKEND, default
        "auto"): "native" or "xla" is installed for every matrix and row class; a ValueError where native
        cannot multiply one of them here, or for xla beside batch_invariant (whose matmuls are all native).
      - "auto" measures, unless calibration is off ($TRELLIS_CALIBRATION=off: calibration_store.directory()
        is None), batch_invariant, or the job has several processes (each would time its own and could
        choose differently, so their programs would differ): then nothing is installed and the rules stand.
      - Measuring: the tree's matrices in groups (each kind of layer matrix; the LM head). For each row
        class of choices.ROW_CLASSES (the head: the decode classes only, its rows are sequences), the group's
        largest matrix (`timing.timed_weights`) is timed on each backend that runs here, and the fastest is
        installed for all of the group's matrices. A group with one candidate is not timed (the rules pick
        it); where native and XLA disagree beyond timing.TOLERANCE (first class) XLA is installed, with a warning.
      - Stored with calibration_store (keyed by the groups' kinds and shapes and this machine) and read back
        on the next start. `last_report()`: the latest timings ({group: {class: {backend: seconds}}}), the
        wall and process CPU seconds spent, and whether they came from the store.
  `prefers_bfloat16(measure=None) -> bool | None`: whether `auto` should load bfloat16 weights on this CPU:
      a representative layer matrix (DTYPE_SHAPES) timed in float32 and in bfloat16, each on its fastest
      backend, for DTYPE_CLASSES; bfloat16 iff its mean time ratio to float32 is below 1. None when
      calibration is off or the job has several processes (the caller keeps the ISA rule). Stored like `apply`'s choices.
  `Measure = (label, call) -> seconds` (None: `timing.timed`, the fastest of a few runs); tests pass a
      function of `label` = (group, row class, backend) instead of a clock.
How a group is timed: timing.py. Cost: one program per group, backend and class, of one matrix capped at
timing.MAX_TIMED_WEIGHTS elements; mostly XLA compiles. docs/benchmarks/calibration.md has the first start's seconds for the default model.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.matmul import calibration_store, choices, native_bf16, timing
from pallas_kernels.matmul.choices import BACKENDS, ROW_CLASSES, Entry
from pallas_kernels.matmul.timing import Group, Measure, groups, measure_group, native_problem, timed

logger = logging.getLogger(__name__)

PIN_ENV = "TRELLIS_MATMUL_BACKEND"
PINS = ("auto", *BACKENDS)
DTYPE_SHAPES = ((1024, 2048), (2048, 1024))  # a representative layer's up- and down-projection, [K, N]
DTYPE_CLASSES = ("decode", "prefill")
_report: dict = {}


def pinned(given: str | None = None) -> str:
    """The pin in force: `given` unless None or "auto", else $TRELLIS_MATMUL_BACKEND (default "auto")."""
    if given not in (None, "auto"):
        if given not in PINS:
            raise ValueError(f"matmul backend must be one of {PINS}, got {given!r}")
        return given
    value = os.environ.get(PIN_ENV, "auto").strip().lower() or "auto"
    if value not in PINS:
        raise ValueError(f"{PIN_ENV} must be one of {PINS}, got {value!r}")
    return value


def last_report() -> dict:
    return dict(_report)


def _subject(found: list[Group], dtype) -> list:
    """What a calibration measured, as its cache key sees it."""
    return [
        (
            g.name,
            g.stacked,
            g.classes,
            jnp.dtype(dtype).name,
            [(choices.weight_kind(w), choices.dims(w)) for w in g.weights],
        )
        for g in found
    ]


def _parse_choices(record: dict) -> tuple[dict, dict]:
    chosen = {}
    for kind, k, n, class_name, backend in record["choices"]:
        if backend not in BACKENDS or class_name not in {name for name, _, _ in ROW_CLASSES}:
            raise ValueError(f"unknown backend or row class in {[kind, k, n, class_name, backend]}")
        chosen[Entry(str(kind), int(k), int(n), class_name)] = backend
    return chosen, dict(record["timings"])


def _pinned(found: list[Group], backend: str, batch_invariant: bool) -> dict:
    if backend == "xla" and batch_invariant:
        raise ValueError(f"{PIN_ENV}=xla cannot be honoured with batch_invariant=True: its matmuls are all native")
    chosen = {}
    for group in found:
        problem = native_problem(group.weights[0]) if backend == "native" else None
        if problem is not None:
            kind = choices.weight_kind(group.weights[0])
            raise ValueError(
                f"{PIN_ENV}=native cannot be honoured: {group.name} ({kind}) has no native kernel here: {problem}"
            )
        chosen.update(timing.everywhere(group, backend))
    return chosen


def apply(
    params, dtype, *, batch_invariant: bool = False, pin: str | None = None, measure: Measure | None = None
) -> dict:
    """Install this machine's choices for the prepared `params` (matmul inputs in `dtype`); see the module
    docstring. `measure` None: `timed`."""
    found = groups(params)
    backend = pinned(pin)
    if backend != "auto":
        chosen = _pinned(found, backend, batch_invariant)
        choices.install(chosen)
        return chosen
    where = calibration_store.directory()
    if where is None or batch_invariant or jax.process_count() > 1:
        return {}
    name = calibration_store.key(_subject(found, dtype))
    stored = calibration_store.read(where, name, _parse_choices)
    if stored is not None:
        chosen, timings = stored
        _report.update(timings=timings, seconds=0.0, cpu_seconds=0.0, cached=True)
    else:
        cpu = time.process_time()
        chosen, timings, seconds = _measure_all(found, dtype, measure or timed)
        cpu = time.process_time() - cpu
        calibration_store.write(
            where,
            name,
            {"choices": [[*key, value] for key, value in chosen.items()], "timings": timings, "seconds": seconds},
        )
        _report.update(timings=timings, seconds=seconds, cpu_seconds=cpu, cached=False)
        logger.info("matmul calibration: %d choices measured in %.2f s, stored in %s", len(chosen), seconds, where)
    choices.install(chosen)
    return chosen


def _measure_all(found: list[Group], dtype, measure: Measure) -> tuple[dict, dict, float]:
    start = time.perf_counter()
    chosen, timings = {}, {}
    for group in found:
        group_chosen, group_timings = measure_group(group, dtype, measure)
        chosen.update(group_chosen)
        if group_timings:
            timings[group.name] = group_timings
    return chosen, timings, time.perf_counter() - start


def _dtype_groups() -> dict[str, list[Group]]:
    """One representative layer in each dtype, in the layouts its backends read (bfloat16: plain for XLA,
    and row pairs where the native bf16 kernel runs)."""
    keys = jax.random.split(jax.random.key(0), len(DTYPE_SHAPES))
    mats = [jax.random.normal(key, (1, k, n), jnp.float32) * k**-0.5 for key, (k, n) in zip(keys, DTYPE_SHAPES)]
    classes = DTYPE_CLASSES
    found = {"float32": [Group("dtype/float32", tuple(mats), True, classes)]}
    bf16 = [Group("dtype/bfloat16", tuple(m.astype(jnp.bfloat16) for m in mats), True, classes)]
    if native_bf16.available() is None:
        bf16.append(Group("dtype/bfloat16-pairs", tuple(native_bf16.pack_pairs(m) for m in mats), True, classes))
    found["bfloat16"] = bf16
    return found


def _best_per_class(found: list[Group], dtype, measure: Measure) -> dict[str, float]:
    best: dict[str, float] = {}
    for group in found:
        for class_name, seconds in _single_or_timed(group, dtype, measure).items():
            best[class_name] = min(best.get(class_name, float("inf")), seconds)
    return best


def _single_or_timed(group: Group, dtype, measure: Measure) -> dict[str, float]:
    """{class: the group's fastest backend's seconds}, timing the one candidate too where there is one."""
    _, timings = measure_group(group, dtype, measure)
    if not timings:  # one candidate (XLA): time it alone
        timings = timing.time_alone(group, dtype, measure)
    return {class_name: min(by_backend.values()) for class_name, by_backend in timings.items()}


def _parse_dtype(record: dict) -> bool:
    if not isinstance(record["bfloat16"], bool):
        raise ValueError(f"bfloat16 must be true or false, got {record['bfloat16']!r}")
    return record["bfloat16"]


def prefers_bfloat16(measure: Measure | None = None) -> bool | None:
    """Whether `auto` should pick bfloat16 here, by measurement; see the module docstring."""
    where = calibration_store.directory()
    if where is None or jax.process_count() > 1:  # as in `apply`: every process must pick the same
        return None
    name = calibration_store.key(("dtype", DTYPE_SHAPES, ROW_CLASSES, native_bf16.available() is None))
    stored = calibration_store.read(where, name, _parse_dtype)
    if stored is not None:
        return stored
    start = time.perf_counter()
    found = _dtype_groups()
    f32 = _best_per_class(found["float32"], jnp.float32, measure or timed)
    bf16 = _best_per_class(found["bfloat16"], jnp.bfloat16, measure or timed)
    ratio = float(np.mean([bf16[name] / f32[name] for name in f32]))
    seconds = time.perf_counter() - start
    calibration_store.write(
        where, name, {"bfloat16": ratio < 1, "ratio": ratio, "float32": f32, "bfloat16_s": bf16, "seconds": seconds}
    )
    logger.info(
        "dtype calibration: bfloat16 / float32 matmul time %.2f (%.2f s): auto is %s",
        ratio,
        seconds,
        "bfloat16" if ratio < 1 else "float32",
    )
    return ratio < 1
