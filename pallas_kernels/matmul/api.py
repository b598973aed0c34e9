"""The matmul op: x @ W[layer] for a model's stacked weights, in the layout `prepare` chose for this machine.

Contract:
  `prepare(params, config, *, materialise_head=None, fuse_projections=None, pack_bf16=None, pack_f32=None,
  batch_invariant=False, backend=None) -> params`: the one call a runner makes. Chooses the weight layouts
  this machine's backends read fastest (None = decide here) and returns the prepared tree (layouts.py has the
  layouts), after calibrate.apply chose each matrix's backend per row class (`backend` None or "auto":
  measured, or $TRELLIS_MATMUL_BACKEND; "native" / "xla": pinned):
    materialise_head: tied embeddings get a contiguous lm_head (embed.T); default where a native kernel runs.
    fuse_projections: wq/wk/wv -> w_qkv, w_gate/w_up -> w_gate_up; default where a native kernel runs.
    pack_bf16: a bfloat16 model's matrices as row pairs; default where the AVX512_BF16 kernel runs.
    pack_f32: a float32 model's matrices as strips; default where the float32 kernel runs every step
    (its AVX-512 build, or any build when batch-invariant; the AVX2 build hands big steps to XLA, which
    reads only the plain layout).
    batch_invariant: every matmul through a native kernel (head materialised, float32 as strips); a
    ValueError where the weights cannot take one.
  `linear(x, w, layer=None, rows=None, *, implementation=None, out_dtype=None)`: x [M, K] @ w[layer] ->
  [M, N] in out_dtype (default x's dtype), where w is stacked [L, ...] in any prepared layout, or one plain
  [K, N] matrix with layer None. Rows past `rows` (int32 scalar, may be traced) are zero; the native
  kernels do not compute them. `implementation`: "native" (native_f32.py / native_bf16.py /
  native_quantized.py, by layout),
  "xla" (xla.py), or None to pick by `choose` at trace time from static shapes.
  `choose(x, w, implementation=None) -> "native" | "xla"`: `implementation` where given; else what
  calibrate.py installed for w's kind and shape and x's row class (choices.py: measured on this machine, or
  pinned); else the rules: native for bfloat16 pairs and float32 strips wherever their kernel runs, for
  quantized weights (quantized.py) where theirs runs and M <= its MAX_ROWS; for plain float32 weights where
  the float32 kernel runs and M is within the rows it was measured to win (native_f32.max_rows()); else xla.
  `reads_in_place(x, w, *, batch_invariant=False, unroll=False)`: whether a scan over layers should hand
  `linear` the stacked weights and the layer index (native kernels read them in place; packed layouts are
  read no other way) rather than the scan's slice.
  `native_problem(dtype)`: None where a native kernel multiplies weights of `dtype` here, else why.
  `prefers_bfloat16()`: what `--dtype auto` asks: True on an accelerator; on a CPU, whether bfloat16 matmuls
  measured faster than float32 ones (calibrate.prefers_bfloat16), or with calibration off whether the
  AVX512_BF16 kernel runs.
`reference.py` is the oracle; one file per backend.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp

from pallas_kernels.matmul import calibrate, choices, layouts, native_bf16, native_f32, native_quantized, quantized, xla

logger = logging.getLogger(__name__)

IMPLEMENTATIONS = ("native", "xla")


def is_packed_layout(w) -> bool:
    """Whether stacked `w` is in a layout only `linear` reads: bf16 row pairs, float32 strips, quantized."""
    return native_bf16.is_packed(w) or native_f32.is_strips(w) or quantized.is_quantized(w)


def native_problem(dtype) -> str | None:
    """None when a native CPU kernel multiplies weights of `dtype` here, else the reason."""
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float32:
        return native_f32.available()
    if dtype == jnp.bfloat16:
        return native_bf16.available()
    return f"no native matmul for {dtype.name} weights"


def prefers_bfloat16() -> bool:
    """Whether `--dtype auto` should load bfloat16 here: on an accelerator, yes; on a CPU as measured
    (calibrate.prefers_bfloat16), or where calibration is off whether the AVX512_BF16 kernel runs."""
    if jax.default_backend() != "cpu":
        return True
    measured = calibrate.prefers_bfloat16()
    return native_bf16.available() is None if measured is None else measured


def choose(x, w, implementation=None) -> str:
    """The implementation `linear` uses for these (static) shapes and dtypes; see the module docstring."""
    if implementation is not None:
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"linear: unknown implementation {implementation!r}; use 'native', 'xla' or None")
        return implementation
    measured = choices.lookup(w, x.shape[0])  # calibrate.apply installed it when `prepare` ran
    if measured is not None:
        return measured
    if quantized.is_quantized(w):  # small steps read the codes in place; big ones dequantize, then GEMM
        fits = x.shape[0] <= native_quantized.MAX_ROWS
        return "native" if fits and native_quantized.available() is None else "xla"
    if native_bf16.is_packed(w):
        return "native" if native_bf16.available() is None else "xla"
    if x.dtype != jnp.float32 or w.dtype != jnp.float32 or native_f32.available() is not None:
        return "xla"
    limit = native_f32.max_rows()
    return "native" if native_f32.is_strips(w) or limit is None or x.shape[0] <= limit else "xla"


def reads_in_place(x, w, *, batch_invariant=False, unroll=False) -> bool:
    """Whether a layer scan passes `linear` the stacked `w` and the layer index; see the module docstring."""
    return is_packed_layout(w) or batch_invariant or (not unroll and choose(x, w) == "native")


def _check(x, w, layer):
    if quantized.is_quantized(w):
        if x.ndim != 2 or x.shape[1] != w.shape[-2] or w.ndim != (2 if layer is None else 3):
            raise ValueError(
                f"linear: x must be [M, K] and {w.fmt} weights [L, K, N] (or [K, N] with layer None), got "
                f"{x.shape} and {w.shape}"
            )
        return
    if native_bf16.is_packed(w):
        k2 = w.shape[-3]
        if x.ndim != 2 or w.ndim != 5 or x.shape[1] not in (2 * k2, 2 * k2 - 1):
            raise ValueError(
                f"linear: x must be [M, K] and packed w [L, S, ceil(K/2), W, 2] bfloat16, got "
                f"{x.shape} and {w.shape} {w.dtype}"
            )
    elif native_f32.is_strips(w):
        if x.ndim != 2 or x.shape[1] != w.shape[2]:
            raise ValueError(f"linear: x must be [M, K] and float32 strips [L, S, K, W], got {x.shape} and {w.shape}")
    elif layer is None:
        if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
            raise ValueError(f"linear: x must be [M, K] and w [K, N] (layer None), got {x.shape} and {w.shape}")
    elif x.ndim != 2 or w.ndim != 3 or x.shape[1] != w.shape[1]:
        raise ValueError(f"linear: x must be [M, K] and w [L, K, N], got {x.shape} and {w.shape}")
    if layer is None and is_packed_layout(w):
        raise ValueError(f"linear: packed weights {w.shape} {w.dtype} are stacked: pass the layer")


def linear(x, w, layer=None, rows=None, *, implementation=None, out_dtype=None):
    """x [M, K] @ w[layer] -> [M, N] in out_dtype (default x's dtype); see the module docstring."""
    _check(x, w, layer)
    if choose(x, w, implementation) == "xla":
        return xla.linear(x, w, layer, rows, out_dtype)
    if layer is None:
        w, layer = jax.tree.map(lambda a: a[None], w), 0
    if quantized.is_quantized(w):
        return native_quantized.matmul(x, w, layer, rows).astype(out_dtype or x.dtype)
    if native_bf16.is_packed(w):
        return native_bf16.matmul(x, w, layer, rows, out_dtype)
    return native_f32.matmul(x, w, layer, rows).astype(out_dtype or x.dtype)


def prepare(
    params: dict,
    config,
    *,
    materialise_head: bool | None = None,
    fuse_projections: bool | None = None,
    pack_bf16: bool | None = None,
    pack_f32: bool | None = None,
    batch_invariant: bool = False,
    backend: str | None = None,
) -> dict:
    """The param tree in the layouts this machine's matmul backends read, with the backends for its
    matrices chosen (calibrate.apply); see the module docstring."""
    prepared = _with_layouts(params, config, materialise_head, fuse_projections, pack_bf16, pack_f32, batch_invariant)
    embed = prepared["embed"]
    dtype = jnp.dtype(config.dtype) if quantized.is_quantized(embed) else embed.dtype
    calibrate.apply(prepared, dtype, batch_invariant=batch_invariant, pin=backend)
    return prepared


def _with_layouts(params, config, materialise_head, fuse_projections, pack_bf16, pack_f32, batch_invariant):
    dtype = jnp.dtype(config.dtype) if quantized.is_quantized(params["embed"]) else params["embed"].dtype
    bf16, f32 = dtype == jnp.bfloat16, dtype == jnp.float32
    if pack_bf16 and not bf16:
        raise ValueError(f"pack_bf16 needs a bfloat16 model, got {dtype}")
    if pack_f32 and not f32:
        raise ValueError(f"pack_f32 needs a float32 model, got {dtype}")
    if batch_invariant and any(quantized.is_quantized(v) for v in params["layers"].values()):
        raise ValueError("batch_invariant=True needs float weights: quantized ones have no native kernel yet")
    pairs = bf16 and (pack_bf16 if pack_bf16 is not None else native_bf16.available() is None)
    native = pairs or (f32 and native_f32.available() is None)
    if batch_invariant:
        if not (pairs or f32):
            raise ValueError("batch_invariant=True needs float32 weights, or bfloat16 ones packed (pack_bf16)")
        materialise_head = True  # the LM head must be a matrix the native kernel reads
    # Strips where the native kernel runs every step: its AVX-512 build, or any build when batch-invariant.
    strips = f32 and (
        pack_f32 if pack_f32 is not None else native and (batch_invariant or native_f32.max_rows() is None)
    )
    if materialise_head if materialise_head is not None else native:
        params = layouts.with_materialised_head(params, config)
    if fuse_projections if fuse_projections is not None else native:
        params = layouts.with_fused_projections(params)
    if pairs or strips:
        return layouts.with_packed_matmuls(params)
    if bf16 and jax.devices()[0].platform == "cpu":
        logger.warning(
            "bfloat16 model without the native bf16 matmul (%s): its matmuls run through XLA's bf16 "
            "dots, which are several times slower than float32 on CPU (BENCHMARKS.md); "
            "--dtype float32 is faster here",
            native_bf16.available() or "turned off",
        )
    return params
