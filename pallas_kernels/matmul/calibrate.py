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
        largest matrix (`timed_weights`) is timed on each backend that runs here, and the fastest is
        installed for all of the group's matrices. A group with one candidate is not timed (the rules pick
        it); where native and XLA disagree beyond TOLERANCE (first class) XLA is installed, with a warning.
      - Stored with calibration_store (keyed by the groups' kinds and shapes and this machine) and read back
        on the next start. `last_report()`: the latest timings ({group: {class: {backend: seconds}}}), the
        wall and process CPU seconds spent, and whether they came from the store.
  `prefers_bfloat16(measure=None) -> bool | None`: whether `auto` should load bfloat16 weights on this CPU:
      a representative layer matrix (DTYPE_SHAPES) timed in float32 and in bfloat16, each on its fastest
      backend, for DTYPE_CLASSES; bfloat16 iff its mean time ratio to float32 is below 1. None when
      calibration is off or the job has several processes (the caller keeps the ISA rule). Stored like `apply`'s choices.
  `Measure = (label, call) -> seconds` (None: `timed`): `timed` runs `call` (compiled by a first call) up to
      REPEATS times within REPEAT_BUDGET_S and keeps the fastest; tests pass a function of `label` =
      (group, row class, backend) instead of a clock.
Cost: one program per group, backend and class, of one matrix capped at MAX_TIMED_WEIGHTS elements; mostly
XLA compiles. docs/benchmarks/calibration.md has the first start's seconds for the default model.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.matmul import (
    calibration_store,
    choices,
    native_bf16,
    native_f32,
    native_quantized,
    quantized,
)
from pallas_kernels.matmul.choices import BACKENDS, ROW_CLASSES, Entry

logger = logging.getLogger(__name__)

PIN_ENV = "TRELLIS_MATMUL_BACKEND"
PINS = ("auto", *BACKENDS)
REPEATS = 5
REPEAT_BUDGET_S = 0.05  # per timed program: stop repeating once this much was spent
TOLERANCE = 1e-2  # relative to the largest output: a sanity check, not the op's accuracy test
DTYPE_SHAPES = ((1024, 2048), (2048, 1024))  # a representative layer's up- and down-projection, [K, N]
DTYPE_CLASSES = ("decode", "prefill")
MAX_TIMED_WEIGHTS = 1 << 22  # a timed matrix's most elements (4M: float32 16 MiB, beyond this CPU's caches)
HEAD_CLASSES = tuple(name for name, bound, _ in ROW_CLASSES if bound is not None)
Measure = Callable[[tuple, Callable[[], object]], float]
_report: dict = {}


class Group(NamedTuple):
    name: str
    weights: tuple  # matrices of one kind, stacked [L, ...] (read at layer 0) or single (layer None)
    stacked: bool
    classes: tuple


def timed(label, call) -> float:
    """The fastest of up to REPEATS runs of `call` (already compiled), in seconds."""
    del label
    best, spent = float("inf"), 0.0
    for _ in range(REPEATS):
        start = time.perf_counter()
        jax.block_until_ready(call())
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
        if spent > REPEAT_BUDGET_S:
            break
    return best


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


def native_problem(w) -> str | None:
    """None where a native kernel multiplies `w`'s layout here, else why."""
    if quantized.is_quantized(w):
        return native_quantized.available()
    if native_bf16.is_packed(w):
        return native_bf16.available()
    if w.dtype == jnp.float32:
        return native_f32.available()
    return f"no native kernel for {jnp.dtype(w.dtype).name} weights"


def is_matrix(w) -> bool:
    return quantized.is_quantized(w) or native_bf16.is_packed(w) or native_f32.is_strips(w) or w.ndim == 3


def groups(params) -> list[Group]:
    """The matrices `linear` chooses a backend for: layer matrices by kind, then the LM head."""
    layers: dict[str, list] = {}
    for w in params["layers"].values():
        if is_matrix(w):
            layers.setdefault(choices.weight_kind(w), []).append(w)
    found = [
        Group(f"layers/{kind}", tuple(ws), True, tuple(name for name, _, _ in ROW_CLASSES))
        for kind, ws in layers.items()
    ]
    head = params.get("lm_head")
    if head is None and quantized.is_quantized(params["embed"]):
        head = params["embed"]  # tied and packed: stored as the head's [H, V]
    if head is not None:
        quant = quantized.is_quantized(head)
        found.append(Group("head", (head if quant else head[None],), not quant, HEAD_CLASSES))
    return found


def _rows(class_name: str) -> int:
    return next(rows for name, _, rows in ROW_CLASSES if name == class_name)


def timed_weights(group: Group) -> tuple:
    """The matrix a group is timed on: its largest (most of a step's time; one program per backend and
    class keeps the first start's compiles few), its columns capped at MAX_TIMED_WEIGHTS (a vocabulary-wide
    head costs both backends time in proportion to its columns). Its choice is installed for the group."""
    w = max(group.weights, key=lambda w: np.prod(choices.dims(w)))
    k, n = choices.dims(w)
    return (_first_columns(w, max(MAX_TIMED_WEIGHTS // k, 1)) if k * n > MAX_TIMED_WEIGHTS else w,)


def _first_columns(w, columns: int):
    """About the first `columns` columns of w, in its own layout (packed layouts: whole strips)."""
    if quantized.is_quantized(w):  # codes [..., N, groups, bytes]; scales and mins [..., N, groups]
        factor = None if w.mins is None else w.mins[..., :columns, :]
        return quantized.QuantizedWeight(w.codes[..., :columns, :, :], w.scales[..., :columns, :], factor, w.fmt)
    if native_bf16.is_packed(w):  # [..., S, K2, W, 2]
        return w[..., : max(columns // w.shape[-2], 1), :, :, :]
    if native_f32.is_strips(w):  # [..., S, K, W]
        return w[..., : max(columns // w.shape[-1], 1), :, :]
    return w[..., :columns]


def _inputs(weights: tuple, rows: int, dtype) -> list:
    keys = jax.random.split(jax.random.key(rows), len(weights))
    return [
        jax.random.normal(key, (rows, choices.dims(w)[0]), jnp.float32).astype(dtype) for key, w in zip(keys, weights)
    ]


def _program(group: Group, backend: str):
    """jit(xs, weights) -> each x @ w by `backend`, layer 0 of a stack read in place."""
    from pallas_kernels.matmul.api import linear  # api imports this module

    layer = 0 if group.stacked else None

    def run(xs, weights):
        return [linear(x, w, layer, implementation=backend) for x, w in zip(xs, weights)]

    return jax.jit(run)


def _agrees(got, want) -> bool:
    for y, ref in zip(got, want):
        y, ref = np.asarray(y, np.float32), np.asarray(ref, np.float32)
        if np.abs(y - ref).max() > TOLERANCE * max(float(np.abs(ref).max()), 1e-30):
            return False
    return True


def _candidates(group: Group, dtype, programs: dict) -> list[str]:
    """The backends that run here; with two, both only where they agree on the group's first row class (each
    is tested against the reference in tests/kernels; this guards a miscompiled kernel on this machine
    without compiling the reference too). Disagreeing: XLA alone, with a warning."""
    found = [name for name in BACKENDS if name == "xla" or native_problem(group.weights[0]) is None]
    if len(found) < 2:
        return found
    weights = timed_weights(group)
    xs = _inputs(weights, _rows(group.classes[0]), dtype)
    outputs = [programs[name](xs, weights) for name in found]
    if _agrees(outputs[0], outputs[1]):
        return found
    logger.warning("matmul calibration: %s's native backend disagrees with XLA's; not used", group.name)
    return ["xla"]


def _time(measure: Measure, label: tuple, program, xs, weights) -> float:
    jax.block_until_ready(program(xs, weights))  # compile outside the timing
    return measure(label, functools.partial(program, xs, weights))


def measure_group(group: Group, dtype, measure: Measure = timed) -> tuple[dict, dict]:
    """({Entry: fastest backend}, {class: {backend: seconds}}) for one group (empty with < 2 candidates)."""
    programs = {backend: _program(group, backend) for backend in BACKENDS}  # one jit each: class 1 compiles once
    candidates = _candidates(group, dtype, programs)
    if len(candidates) < 2:  # only XLA runs here (the rules pick it), or the native kernel disagreed
        disagreed = native_problem(group.weights[0]) is None
        return (_everywhere(group, "xla") if disagreed else {}), {}
    weights = timed_weights(group)
    timings: dict[str, dict[str, float]] = {}
    for class_name in group.classes:
        xs = _inputs(weights, _rows(class_name), dtype)
        timings[class_name] = {}
        for backend in candidates:
            timings[class_name][backend] = _time(
                measure, (group.name, class_name, backend), programs[backend], xs, weights
            )
    chosen = {}
    for class_name, by_backend in timings.items():
        best = min(by_backend, key=by_backend.get)
        chosen.update({_entry(w, class_name): best for w in group.weights})
    return chosen, timings


def _entry(w, class_name: str) -> Entry:
    return Entry(choices.weight_kind(w), *choices.dims(w), class_name)


def _everywhere(group: Group, backend: str) -> dict:
    """`backend` for each of the group's matrices in every row class."""
    return {_entry(w, name): backend for w in group.weights for name, _, _ in ROW_CLASSES}


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
        chosen.update(_everywhere(group, backend))
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
        program, weights = _program(group, "xla"), timed_weights(group)
        timings = {}
        for class_name in group.classes:
            xs = _inputs(weights, _rows(class_name), dtype)
            timings[class_name] = {"xla": _time(measure, (group.name, class_name, "xla"), program, xs, weights)}
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
