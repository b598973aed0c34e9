"""Public entry point: `ragged_paged_attention` (+ `write_kv`), validated at trace time, dispatched by name.

Contract: docs/CONTRACTS.md, "Kernel API"; semantics: `reference.py` (the oracle every backend matches).

`implementation=` names a backend; a named backend that cannot run here raises `UnavailableError`
at once (no silent fallback). `None` picks by platform, first usable in this order:
  * GPU, Hopper (compute capability >= 9.0): "pallas_triton" (the fastest measured Pallas path on the
    H200, docs/benchmarks/gpu.md), then "xla";
  * GPU, pre-Hopper: "pallas_triton", then "xla";
  * CPU (and anything else): "cpu_native" (C++ kernels, where they build), then "xla".
Names: "reference" (jnp oracle), "xla" (CPU-tuned XLA), "cpu_native" (C++ kernels), "cpu_batch_invariant"
(every row through the decode kernel, one fixed order: `--deterministic` on CPU), "pallas_triton" (GPU),
"pallas_interpret" (the Triton kernel in the Pallas interpreter).
Backends are imported lazily, so importing this module never needs a GPU toolchain.
"""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp

from pallas_kernels.ragged_paged_attention.write_kv import write_kv  # noqa: F401  (re-exported)

# name -> (module, function, availability check or None); every function takes the contract's
# arguments plus the keyword options. "pallas_interpret" runs the Triton kernel's body through the Pallas
# interpreter (any platform; slow; for tests).
_PACKAGE = "pallas_kernels.ragged_paged_attention"
_BACKENDS = {
    "reference": (f"{_PACKAGE}.reference", "ragged_paged_attention_reference", None),
    "xla": (f"{_PACKAGE}.xla_cpu", "xla_ragged_paged_attention", None),
    "cpu_native": (f"{_PACKAGE}.cpu_native", "native_ragged_paged_attention", "check_available"),
    "cpu_batch_invariant": (
        f"{_PACKAGE}.cpu_batch_invariant",
        "batch_invariant_ragged_paged_attention",
        "check_available",
    ),
    "pallas_triton": (f"{_PACKAGE}.pallas_triton", "triton_ragged_paged_attention", "check_available"),
    "pallas_interpret": (f"{_PACKAGE}.pallas_triton", "interpret_ragged_paged_attention", "check_interpret_available"),
}
_FALLBACK_ORDER = {
    "hopper": ("pallas_triton", "xla"),
    "gpu": ("pallas_triton", "xla"),
    "cpu": ("cpu_native", "xla"),
}
_SUPPORTED_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


class UnavailableError(RuntimeError):
    """A named implementation cannot run on this platform / JAX version."""


def available_implementations():
    """Names accepted by `implementation=` (whether they can run here is checked at call time)."""
    return tuple(_BACKENDS)


def _platform_kind():
    device = jax.devices()[0]
    if device.platform != "gpu":
        return "cpu"
    capability = getattr(device, "compute_capability", "0.0")
    return "hopper" if float(capability) >= 9.0 else "gpu"


def _load(name):
    if name not in _BACKENDS:
        raise ValueError(
            f"ragged_paged_attention: unknown implementation {name!r}; choose one of {sorted(_BACKENDS)} or None"
        )
    module_name, function_name, check_name = _BACKENDS[name]
    module = importlib.import_module(module_name)
    if check_name is not None:
        problem = getattr(module, check_name)(_platform_kind())
        if problem:
            raise UnavailableError(f"ragged_paged_attention: implementation {name!r} cannot run here: {problem}")
    return getattr(module, function_name)


def default_implementation():
    """The name `implementation=None` resolves to on this platform."""
    for name in _FALLBACK_ORDER[_platform_kind()]:
        try:
            _load(name)
        except UnavailableError:
            continue
        return name
    return "reference"


def _fail(message):
    raise ValueError(f"ragged_paged_attention: {message}")


def _check_int(name, x, shape):
    if tuple(x.shape) != tuple(shape) or not jnp.issubdtype(x.dtype, jnp.integer):
        _fail(f"{name} must be int32{list(shape)}, got {x.dtype}{list(x.shape)}")


def validate(q, k_pages, v_pages, layer, kv_lens, page_table, cu_q_lens, num_seqs):
    """Trace-time shape/dtype checks; raises ValueError naming the offending values."""
    if q.ndim != 3:
        _fail(f"q must be [T, Hq, D], got shape {q.shape}")
    if k_pages.ndim != 5 or k_pages.shape != v_pages.shape:
        _fail(f"k_pages/v_pages must both be [L, Hkv, P, S, D], got {k_pages.shape} and {v_pages.shape}")
    num_rows, num_q_heads, head_dim = q.shape
    _, num_kv_heads, _, _, page_head_dim = k_pages.shape
    if page_head_dim != head_dim:
        _fail(f"head_dim of q ({head_dim}) != head_dim of the pages ({page_head_dim})")
    if num_q_heads % num_kv_heads:
        _fail(f"q heads ({num_q_heads}) must be a multiple of kv heads ({num_kv_heads})")
    for name, x in (("q", q), ("k_pages", k_pages), ("v_pages", v_pages)):
        if x.dtype not in _SUPPORTED_DTYPES:
            _fail(f"{name} dtype {x.dtype} not supported; use one of float32, bfloat16, float16")
    if k_pages.dtype != v_pages.dtype:
        _fail(f"k_pages dtype {k_pages.dtype} != v_pages dtype {v_pages.dtype}")
    if page_table.ndim != 2:
        _fail(f"page_table must be int32[B, max_pages], got {page_table.dtype}{list(page_table.shape)}")
    num_seqs_max = page_table.shape[0]
    _check_int("page_table", page_table, page_table.shape)
    _check_int("kv_lens", kv_lens, (num_seqs_max,))
    _check_int("cu_q_lens", cu_q_lens, (num_seqs_max + 1,))
    _check_int("layer", jnp.asarray(layer), ())
    _check_int("num_seqs", jnp.asarray(num_seqs), ())
    if num_rows == 0:
        _fail("q has no rows (T == 0)")


def ragged_paged_attention(
    q,
    k_pages,
    v_pages,
    layer,
    kv_lens,
    page_table,
    cu_q_lens,
    num_seqs,
    *,
    sm_scale=None,
    soft_cap=None,
    sliding_window=None,
    implementation=None,
    **backend_options,
):
    """Causal attention of ragged new tokens over paged K/V with a prefix offset.

    q [T, Hq, D]; k/v_pages [L, Hkv, P, S, D]; layer int32[]; kv_lens int32[B];
    page_table int32[B, max_pages]; cu_q_lens int32[B+1]; num_seqs int32[]  ->  out [T, Hq, D] (q.dtype).
    `sm_scale`, `soft_cap`, `sliding_window` are static Python numbers (or None);
    `backend_options` are static tuning knobs forwarded to the chosen backend.
    """
    validate(q, k_pages, v_pages, layer, kv_lens, page_table, cu_q_lens, num_seqs)
    if soft_cap is not None and soft_cap <= 0:
        _fail(f"soft_cap must be > 0 or None, got {soft_cap}")
    if sliding_window is not None and sliding_window < 1:
        _fail(f"sliding_window must be >= 1 or None, got {sliding_window}")
    name = default_implementation() if implementation is None else implementation
    kernel = _load(name)
    return kernel(
        q,
        k_pages,
        v_pages,
        jnp.asarray(layer, jnp.int32),
        kv_lens.astype(jnp.int32),
        page_table.astype(jnp.int32),
        cu_q_lens.astype(jnp.int32),
        jnp.asarray(num_seqs, jnp.int32),
        sm_scale=sm_scale,
        soft_cap=soft_cap,
        sliding_window=sliding_window,
        **backend_options,
    )
