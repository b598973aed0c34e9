"""The functional Llama-family forward over paged KV: (params, kv, batch) -> (logits, kv).

Contract (docs/CONTRACTS.md, "Model"): `forward(params, kv, batch, *, config, attn_impl)` checks the inputs
(`validate`: the params' layout, the KV pages and the step inputs, with chex; ValueError), then applies the
Flax model, `LlamaModel(config, ...).apply({"params": params}, kv, batch)` (model/llama.py, model/modules.py):
it embeds batch.token_ids, runs the decoder layers under `lax.scan` over the stacked layer weights (compile
time flat in depth), carrying the KV pages through the scan, and returns float32 logits [S, vocab] for the
rows batch.logits_indices plus the updated pages. Each layer writes its new K/V with `write_kv(...,
layer=i)` and attends with `ragged_paged_attention(..., layer=i)`: the single attention dispatch point
(`attn_impl` picks the kernel backend; None lets the kernel package choose). Arithmetic: every matmul
sums in float32 and takes its inputs in the params' dtype; the residual stream, norms, q/k/v and RoPE are
float32, then q is rounded to the params' dtype and k/v to the KV pages'. For a float32 model that is
Hugging Face's arithmetic. For a bfloat16 model it is llama.cpp's rather than Hugging Face's (which keeps
the stream and q/k/v in bfloat16, rounding after every matmul and add): its greedy tokens then track the
float32 engine's far more often, at no measurable cost (docs/benchmarks/dtype-bf16.md, "bf16 arithmetic").
Every matmul is one call to the matmul op (`pallas_kernels.matmul.linear`), on weights in whatever layout
its `prepare` chose; where the op reads stacked weights in place (`reads_in_place`: its native CPU kernels,
and the packed layouts only they read), the scan hands it the stacked matrices and the layer index, and
the step's `rows` real tokens (the bucket's padding rows come out zero); else the scan's slice.
The LM head uses `lm_head` when present (for tied models, a materialised embed.T).
`batch_invariant=True` (static; `--deterministic`) sends every matmul and the LM head through the op's native
kernel whatever the step's row count: each output element there is one float32 sum over K in a fixed order
(native/layer_matmul*.cc), so a token row's result does not depend on the other rows, their number or its
place among them (XLA's GEMM may block K differently per shape). The caller checks that kernel runs here.
"""

from __future__ import annotations

import jax

from trellis_jax.model.inputs import StepInputs, check_step_inputs
from trellis_jax.model.kv import KVPages, check_kv_pages
from trellis_jax.model.llama import LlamaModel
from trellis_jax.model.params import check_params


def validate(params: dict, kv: KVPages, batch: StepInputs, config) -> None:
    """Trace-time checks (shapes and dtypes only, free at run time); ValueError names the offending values."""
    check_params(params, config)
    check_kv_pages(kv, config)
    check_step_inputs(batch)


def forward(
    params: dict,
    kv: KVPages,
    batch: StepInputs,
    *,
    config,
    attn_impl: str | None = None,
    unroll_layers: int | bool = 1,
    batch_invariant: bool = False,
    tp_axis: str | None = None,
):
    """-> (logits [S, vocab] float32, kv). `config`, `attn_impl`, `unroll_layers`, `batch_invariant` and
    `tp_axis` are static under jit (`batch_invariant`: see the module docstring).

    `tp_axis`: the mesh axis of tensor parallelism when run per shard under shard_map (runner/tensor_parallel.py):
    params, KV pages and `config` are then one shard's, and the row-parallel matmuls (wo, w_down) psum over it.

    `unroll_layers` (trellis_jax/layer_unroll.py): 1 keeps the layer scan, N >= 2 runs N layers per loop
    iteration, -1 (or True) unrolls it fully; same math either way. On an H200 the full unroll made a 1B model's
    decode step ~1.4x faster and prefill ~10% faster, at ~8x the compile time (docs/benchmarks/gpu.md);
    scan by default. Pass the canonical value (layer_unroll.normalize) so equal spellings share a compile.
    """
    validate(params, kv, batch, config)
    model = LlamaModel(
        config, attn_impl=attn_impl, unroll_layers=unroll_layers, batch_invariant=batch_invariant, tp_axis=tp_axis
    )
    return model.apply({"params": params}, kv, batch)


# Jitted entry point: config/attn_impl static (hashable), KV pages donated so the scatter is in place.
jit_forward = jax.jit(
    forward,
    static_argnames=("config", "attn_impl", "unroll_layers", "batch_invariant", "tp_axis"),
    donate_argnames=("kv",),
)
