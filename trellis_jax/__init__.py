"""Trellis-JAX: a local LLM inference engine on JAX/XLA built around RadixAttention.

Layers (imports only flow downwards; see docs/CONTRACTS.md):
cache/ and the scheduler are pure host Python; model/, runner and pallas_kernels/ are the device side;
engine/ joins them; serve/ and tools/ sit on top.
"""

__version__ = "0.1.0"
