"""What the cache did for a request, in the model's own cost formulas (trellis_jax.model.cost).

- prefill FLOPs saved = the FLOPs of computing the cached prefix itself: `prefill_flops(c, cached)`
  (for a prompt of P tokens with C cached, F(P, 0) - F(P - C, C) = F(C, 0) exactly).
- KV bytes re-read = cached tokens x KV bytes per token: cache contents read instead of recomputed.
- prefill FLOPs computed and decode bytes read are counters; with the device ceilings (exported as gauges)
  a scraper derives MFU and bandwidth use from their rates;
  a decode token reads its context's KV plus the weights, shared by the sequences decoding together.
Device ceilings (peak dense bf16 FLOP/s, HBM bytes/s) come from a small table by device kind or from
the CLI; unknown devices (CPU) report no utilisation unless ceilings are given.
"""

from __future__ import annotations

from dataclasses import dataclass

# Peak dense bf16 tensor FLOP/s and memory bandwidth (bytes/s) from the vendors' datasheets (SXM parts).
DEVICE_CEILINGS = {
    "H200": (989e12, 4.8e12),
    "H100": (989e12, 3.35e12),
    "A100": (312e12, 2.039e12),
    "L4": (121e12, 0.3e12),
}


@dataclass(frozen=True)
class Ceilings:
    flops_per_s: float
    bytes_per_s: float


def ceilings_for(device_kind: str | None, peak_tflops: float | None = None, peak_gbps: float | None = None):
    """Ceilings from explicit values, else by device kind ('NVIDIA H200' -> H200); None when unknown."""
    if peak_tflops and peak_gbps:
        return Ceilings(peak_tflops * 1e12, peak_gbps * 1e9)
    kind = (device_kind or "").upper()
    for name, (flops, bandwidth) in DEVICE_CEILINGS.items():
        if name in kind:
            return Ceilings(peak_tflops * 1e12 if peak_tflops else flops, peak_gbps * 1e9 if peak_gbps else bandwidth)
    return None


class CostModel:
    """Cost formulas bound to one model config and KV dtype (None config: every figure is 0).
    `weight_bytes`: what a step reads of the weights as loaded (model.params.streamed_weight_bytes: packed
    weights are a fraction of the config's float size); None = the config's float weights."""

    def __init__(self, config=None, dtype: str | None = None, weight_bytes: int | None = None):
        self.config = config
        self.dtype = dtype or getattr(config, "dtype", "float32")
        self.weight_bytes = weight_bytes
        if config is not None:  # imported only with a real model: the package pulls in jax
            from trellis_jax.model import cost

            self._cost = cost

    def flops_saved(self, cached_tokens: int) -> float:
        return self._cost.prefill_flops(self.config, cached_tokens) if self.config and cached_tokens else 0.0

    def kv_bytes_reread(self, cached_tokens: int) -> int:
        return self._cost.kv_bytes_per_token(self.config, self.dtype) * cached_tokens if self.config else 0

    def prefill_flops(self, prompt_tokens: int, cached_tokens: int) -> float:
        if not self.config or prompt_tokens <= cached_tokens:
            return 0.0
        return self._cost.prefill_flops(self.config, prompt_tokens - cached_tokens, cached_tokens)

    def decode_bytes(self, context_len: int, batch_size: int) -> float:
        """Bytes one decode token reads: its context's KV plus its share of the weights."""
        if not self.config:
            return 0.0
        kv = self._cost.kv_bytes_per_token(self.config, self.dtype) * context_len
        weights = (
            self.weight_bytes if self.weight_bytes is not None else self._cost.weight_bytes(self.config, self.dtype)
        )
        return kv + weights / max(1, batch_size)
