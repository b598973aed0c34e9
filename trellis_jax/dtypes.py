"""Model dtypes, and what "auto" means on this machine.

Contract: `MODEL_DTYPES` are the dtypes weights load in; `DTYPE_CHOICES` adds "auto", the engine's
default. `resolve_dtype(dtype)` returns a model dtype: anything but "auto" unchanged, and "auto" as
bfloat16 where the matmul op says so (`pallas_kernels.matmul.prefers_bfloat16`: any accelerator; on a
CPU, where bfloat16 matmuls measured faster than float32 ones on the first start, or with calibration
off, where the AVX512_BF16 kernel runs), else float32.

Why auto is the default: SmolLM2 and most Llama-family models are trained and published in bfloat16,
and on such machines it is ~1.7x the float32 engine's speed (half the weight bytes every decode step
reads; twice the multiply-adds per instruction in prefill). Where bfloat16 would be emulated (a CPU
without AVX512_BF16), float32 is the faster choice, so auto picks it. Pass dtype="float32" for outputs
that track a float32 reference.
"""

from __future__ import annotations

MODEL_DTYPES = ("float32", "bfloat16")
WEIGHT_FORMATS = ("auto", "float", "packed")  # how a quantized GGUF's weights live in memory (load_model)
# What "auto" means for a GGUF file: packed. Decode was measured faster at batch 1, 8 and 32 than the float32
# engine's on the same file, prefill slower (docs/benchmarks/quantized.md).
AUTO_WEIGHT_FORMAT = "packed"
AUTO = "auto"
# --quantization: a float checkpoint's matrices quantized at load, per group of 32 (trellis_jax/checkpoints/quantize.py)
NO_QUANTIZATION = "none"
QUANTIZATIONS = (NO_QUANTIZATION, "int8", "int4")
DTYPE_CHOICES = (AUTO, *MODEL_DTYPES)
# --matmul-backend: "auto" = measured on this machine (pallas_kernels/matmul/calibrate.py; $TRELLIS_MATMUL_BACKEND
# may pin it), "native" / "xla" = that backend for every matrix.
MATMUL_BACKENDS = (AUTO, "native", "xla")


def resolve_dtype(dtype: str) -> str:
    if dtype not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {DTYPE_CHOICES}, got {dtype!r}")
    if dtype != AUTO:
        return dtype
    return "bfloat16" if native_bfloat16() else "float32"


def resolve_weight_format(weight_format: str, gguf: bool = True) -> str:
    """The format a checkpoint loads in ("float" or "packed"): anything but "auto" unchanged (after a
    check); "auto" as AUTO_WEIGHT_FORMAT for a GGUF file (`gguf`), else float (only GGUF holds packed ones)."""
    if weight_format not in WEIGHT_FORMATS:
        raise ValueError(f"weight_format must be one of {WEIGHT_FORMATS}, got {weight_format!r}")
    if weight_format != AUTO:
        return weight_format
    return AUTO_WEIGHT_FORMAT if gguf else "float"


def check_quantization(quantization: str, weight_format: str = AUTO) -> None:
    """A ValueError for an unknown quantization, or one asked for beside a weight format other than auto
    (it quantizes a float checkpoint: "float" would ask to keep it float, "packed" for a quantized file)."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    if quantization != NO_QUANTIZATION and weight_format != AUTO:
        raise ValueError(
            f"quantization={quantization!r} quantizes a float checkpoint at load; it cannot be combined with "
            f"weight_format={weight_format!r} (leave weight_format 'auto')"
        )


def native_bfloat16() -> bool:
    """Whether this machine's default JAX backend multiplies bfloat16 natively: the matmul op's answer
    (imports jax)."""
    from pallas_kernels.matmul.api import prefers_bfloat16

    return prefers_bfloat16()
