"""Trellis-JAX: a local LLM inference engine on JAX/XLA built around RadixAttention.

Layers (imports only flow downwards; see docs/CONTRACTS.md):
cache/ and the scheduler are pure host Python; model/, runner and pallas_kernels/ are the device side;
engine/ joins them; serve/ and tools/ sit on top.

    from trellis_jax import LLM, SamplingParams   # the offline API (engine/api.py), loaded on first use
    from trellis_jax import StructuredOutput      # SamplingParams(structured_output=StructuredOutput(...))
"""

__version__ = "0.1.0"

_LAZY = {
    "LLM",
    "SamplingParams",
    "StructuredOutput",
    "RequestOutput",
}  # from trellis_jax.engine.api, loaded on first use


def __getattr__(name: str):
    """`from trellis_jax import LLM, SamplingParams` without making `import trellis_jax` load the engine."""
    if name in _LAZY:
        from trellis_jax.engine import api

        return getattr(api, name)
    raise AttributeError(f"module 'trellis_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
