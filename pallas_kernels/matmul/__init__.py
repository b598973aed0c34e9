"""The matmul op: x @ W[layer] over a model's stacked weights, with the weights prepared for the backend.

Public API: `prepare` (the runner's one call), `linear` (the model's one call), `choose`, `reads_in_place`,
`prefers_bfloat16`, `native_problem` from `api.py`; `reference.py` is the oracle; one module per backend
(native_f32.py, native_bf16.py, native_quantized.py, xla.py); layouts.py holds the weight layouts;
calibrate.py times the backends on this machine (timing.py: how; choices.py: what it chose; calibration_store.py
keeps it on disk).
"""

from pallas_kernels.matmul.api import (  # noqa: F401
    choose,
    is_packed_layout,
    linear,
    native_problem,
    prefers_bfloat16,
    prepare,
    reads_in_place,
)
