"""Ragged paged attention with a prefix offset (RadixAttention's compute side).

Public API (docs/CONTRACTS.md, "Kernel API"): `ragged_paged_attention`, `write_kv` from `api.py`;
`reference.py` is the oracle; one module per backend, chosen by `implementation=`.
"""

from pallas_kernels.ragged_paged_attention.api import (  # noqa: F401
    UnavailableError,
    available_implementations,
    default_implementation,
    ragged_paged_attention,
    write_kv,
)
