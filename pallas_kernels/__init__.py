"""Attention kernels for paged KV: a plain-jnp reference beside every backend (see docs/CONTRACTS.md)."""
