"""KV page stores below the device pool (pure host Python + numpy, no jax): the contract is in api.py."""

from trellis_jax.kvstore.api import PAGE_KEY_BYTES, PageEntry, PageStore, chain_key

__all__ = ["PAGE_KEY_BYTES", "PageEntry", "PageStore", "chain_key"]
