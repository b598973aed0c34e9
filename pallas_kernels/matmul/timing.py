"""How calibrate.py times the matmul op's backends: groups of a prepared tree's matrices, one small program
per group, backend and row class, and the clock.

Contract:
  `Group(name, weights, stacked, classes)`: matrices of one kind (stacked [L, ...], read at layer 0, or
      single), timed for the row classes `classes`. `groups(params)`: the layer matrices by kind, then the LM
      head (decode classes only: its rows are sequences).
  `measure_group(group, dtype, measure=timed) -> ({Entry: fastest backend}, {class: {backend: seconds}})`:
      the group's largest matrix (`timed_weights`, columns capped at MAX_TIMED_WEIGHTS) timed on each backend
      that runs here, the fastest installed for every matrix of the group; empty where only XLA runs;
      XLA everywhere, with a warning line, where the native kernel disagrees with XLA beyond TOLERANCE.
  `time_alone(group, dtype, measure) -> {class: {"xla": seconds}}`: a one-candidate group timed anyway.
  `timed(label, call) -> seconds`: the fastest of up to REPEATS runs within REPEAT_BUDGET_S.
  `native_problem(w)`: None where a native kernel multiplies w's layout here, else why.
  `everywhere(group, backend)`: {Entry: backend} for every matrix and row class.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.matmul import choices, native_bf16, native_f32, native_quantized, quantized
from pallas_kernels.matmul.choices import BACKENDS, ROW_CLASSES, Entry

logger = logging.getLogger(__name__)

REPEATS = 5
REPEAT_BUDGET_S = 0.05  # per timed program: stop repeating once this much was spent
TOLERANCE = 1e-2  # relative to the largest output: a sanity check, not the op's accuracy test
MAX_TIMED_WEIGHTS = 1 << 22  # a timed matrix's most elements (4M: float32 16 MiB, beyond this CPU's caches)
HEAD_CLASSES = tuple(name for name, bound, _ in ROW_CLASSES if bound is not None)
Measure = Callable[[tuple, Callable[[], object]], float]


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
        return (everywhere(group, "xla") if disagreed else {}), {}
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


def everywhere(group: Group, backend: str) -> dict:
    """`backend` for each of the group's matrices in every row class."""
    return {_entry(w, name): backend for w in group.weights for name, _, _ in ROW_CLASSES}


def time_alone(group: Group, dtype, measure: Measure = timed) -> dict[str, dict[str, float]]:
    """{class: {"xla": seconds}}: a group only XLA multiplies, timed anyway (the dtype comparison needs it)."""
    program, weights = _program(group, "xla"), timed_weights(group)
    timings = {}
    for class_name in group.classes:
        xs = _inputs(weights, _rows(class_name), dtype)
        timings[class_name] = {"xla": _time(measure, (group.name, class_name, "xla"), program, xs, weights)}
    return timings
