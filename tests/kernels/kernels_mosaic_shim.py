"""Test-only shim: run the Mosaic GPU kernel in JAX's GPU interpreter on CPU.

The interpreter (JAX 0.10, private module) cannot read a WGMMA B operand through `transpose_ref`; this
wraps its wgmma callback to apply the transpose itself. `interpret_params()` returns None when the
interpreter is not importable, so callers can skip.
"""

import numpy as np


def interpret_params():
    try:
        from jax._src.pallas.mosaic_gpu.interpret import gpu_callbacks
        from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams
        from jax._src.state.types import TransposeTransform
    except ImportError:
        return None
    if not getattr(gpu_callbacks.wgmma, "_transpose_shim", False):
        gpu_callbacks.wgmma = _with_transposed_b(gpu_callbacks, gpu_callbacks.wgmma, TransposeTransform)
    return InterpretGPUParams()


def _with_transposed_b(module, wgmma, transpose_type):
    def shimmed(*, b_transforms, **kwargs):
        transforms = list(b_transforms)
        if not transforms or not isinstance(transforms[-1], transpose_type):
            return wgmma(b_transforms=b_transforms, **kwargs)
        permutation = transforms.pop().permutation
        matmul = module.np.matmul
        module.np.matmul = lambda a, b, dtype=None: matmul(a, np.transpose(b, permutation), dtype=dtype)
        try:
            return wgmma(b_transforms=tuple(transforms), **kwargs)
        finally:
            module.np.matmul = matmul

    shimmed._transpose_shim = True
    return shimmed
