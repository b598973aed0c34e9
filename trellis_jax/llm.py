"""Top-level shortcut for offline use: `from trellis_jax.llm import LLM, SamplingParams`.

The implementation lives in trellis_jax/engine (see engine/api.py for the whole public API).
"""

from trellis_jax.engine.api import LLM, RequestOutput, SamplingParams

__all__ = ["LLM", "RequestOutput", "SamplingParams"]
