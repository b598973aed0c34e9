"""The Llama-family model: config, parameter layout, paged-KV forward and cost model.

Owns: `ModelConfig` (static, hashable), the params pytree layout (`params.py`), `KVPages` and
`StepInputs` (the data crossing into the forward), the Flax modules (`llama.py`: `LlamaModel`; `modules.py`:
the decoder layer's parts), `forward` / `jit_forward` (which apply them), the weights' logical axes
(`logical_axes.py`) and their NamedShardings on a mesh (`sharding.py`). Imports jax, flax, chex, numpy and
`pallas_kernels` only; re-exports the matmul op's `quantized` layout and its `quantize` (float -> packed) for the loaders (see docs/CONTRACTS.md, "Model"). Checkpoint formats live in `trellis_jax.checkpoints`.
"""

from pallas_kernels.matmul import (
    quantize,  # float matrices -> packed (--quantization int8|int4)
    quantized,  # weights a loader keeps packed (GGUF Q8_0/Q4_0/Q4_1, K-quants)
)
from trellis_jax.model.config import ModelConfig
from trellis_jax.model.forward import forward, jit_forward
from trellis_jax.model.inputs import StepInputs, build_step_inputs, sequential_page_tables
from trellis_jax.model.kv import KVPages, copy_pages, init_kv_pages, kv_pages_bytes
from trellis_jax.model.params import check_params, init_params, param_shapes
from trellis_jax.model.rope import RopeScaling

__all__ = [
    "ModelConfig",
    "RopeScaling",
    "KVPages",
    "StepInputs",
    "forward",
    "jit_forward",
    "init_kv_pages",
    "kv_pages_bytes",
    "build_step_inputs",
    "sequential_page_tables",
    "init_params",
    "check_params",
    "param_shapes",
    "copy_pages",
    "quantized",
    "quantize",
]
