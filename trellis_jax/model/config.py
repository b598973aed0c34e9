"""ModelConfig: the static, hashable description of a Llama-family decoder.

Contract: a frozen dataclass, validated in `__post_init__`, usable as a static jit argument. Built from a
Hugging Face `config.json` dict (`from_hf_config`) or GGUF metadata (`from_gguf_metadata`); derived sizes
are properties. The cost model (FLOPs, KV bytes, weight bytes) lives in `cost.py` and is exposed here as
methods so callers only need the config. Unknown architectures and inconsistent sizes raise ValueError.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from trellis_jax.model import cost
from trellis_jax.model.rope import RopeScaling

# HF `architectures[0]` / `model_type` -> our family name. All share the Llama block; they differ in
# q/k/v bias (qwen2) and sliding-window attention (mistral).
HF_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
}
HF_MODEL_TYPES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2"}
DTYPES = ("float32", "bfloat16")
KV_DTYPES = ("float32", "bfloat16", "float16")  # KV pages may be narrower than the model (runner kv_dtype)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Static hyper-parameters. Changing any field recompiles the forward."""

    architecture: str  # "llama" | "mistral" | "qwen2"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v projections carry a bias (Qwen2)
    sliding_window: int | None = None  # attend to at most this many most recent tokens (Mistral)
    dtype: str = "float32"  # parameter and KV dtype; logits are always float32

    def __post_init__(self):
        if self.architecture not in HF_MODEL_TYPES.values():
            raise ValueError(
                f"unknown architecture {self.architecture!r}; known: {sorted(set(HF_MODEL_TYPES.values()))}"
            )
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; supported: {DTYPES}")
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise ValueError(f"sliding_window must be positive or None, got {self.sliding_window}")
        if self.rms_norm_eps <= 0 or self.rope_theta <= 0:
            raise ValueError(f"rms_norm_eps ({self.rms_norm_eps}) and rope_theta ({self.rope_theta}) must be > 0")

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def group_size(self) -> int:
        """Query heads per KV head (GQA)."""
        return self.num_heads // self.num_kv_heads

    @property
    def num_params(self) -> int:
        return cost.num_params(self)

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    # ---- cost model --------------------------------------------------------------------------
    def flops_per_token(self, context_len: int) -> float:
        """Forward FLOPs for one token that attends to `context_len` tokens (itself included)."""
        return cost.flops_per_token(self, context_len)

    def prefill_flops(self, num_tokens: int, cached_tokens: int = 0) -> float:
        """FLOPs to prefill `num_tokens` new tokens after `cached_tokens` already in the KV cache."""
        return cost.prefill_flops(self, num_tokens, cached_tokens)

    def kv_bytes_per_token(self, dtype: str | None = None) -> int:
        return cost.kv_bytes_per_token(self, dtype or self.dtype)

    def weight_bytes(self, dtype: str | None = None) -> int:
        return cost.weight_bytes(self, dtype or self.dtype)

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any], *, dtype: str = "float32") -> ModelConfig:
        """From a parsed HF `config.json`. Raises ValueError naming an unknown architecture."""
        arch = _hf_architecture(hf)
        num_heads = int(hf["num_attention_heads"])
        hidden = int(hf["hidden_size"])
        if hf.get("hidden_act", "silu") not in ("silu", "swish") or hf.get("mlp_bias"):
            raise ValueError(
                f"only SiLU-gated MLPs without bias are supported (hidden_act="
                f"{hf.get('hidden_act')!r}, mlp_bias={hf.get('mlp_bias')!r})"
            )
        if arch == "qwen2" and hf.get("use_sliding_window"):
            raise ValueError("Qwen2 use_sliding_window (a window on some layers only) is not supported")
        sliding = hf.get("sliding_window") if arch == "mistral" else None
        return cls(
            architecture=arch,
            vocab_size=int(hf["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(hf["intermediate_size"]),
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
            head_dim=int(hf.get("head_dim") or hidden // num_heads),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=float(_hf_rope_theta(hf)),
            rope_scaling=RopeScaling.from_hf(_hf_rope_params(hf)),
            max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            attention_bias=arch == "qwen2" or bool(hf.get("attention_bias", False)),
            sliding_window=int(sliding) if sliding else None,
            dtype=dtype,
        )

    @classmethod
    def from_gguf_metadata(
        cls,
        meta: Mapping[str, Any],
        *,
        tied: bool,
        dtype: str = "float32",
        rope_freq_factors: tuple[float, ...] | None = None,
    ) -> ModelConfig:
        """From GGUF key/values (`{arch}.block_count` etc.). `tied`: the file has no `output.weight`."""
        arch = meta.get("general.architecture")
        if arch not in ("llama", "qwen2"):
            raise ValueError(f"unknown GGUF architecture {arch!r}; supported: llama (incl. Mistral, SmolLM2), qwen2")
        p = f"{arch}."
        num_heads = int(meta[p + "attention.head_count"])
        hidden = int(meta[p + "embedding_length"])
        vocab = meta.get(p + "vocab_size") or meta.get("tokenizer.ggml.tokens_count")
        sliding = meta.get(p + "attention.sliding_window")
        head_dim = int(meta.get(p + "attention.key_length") or hidden // num_heads)
        rope_dims = meta.get(p + "rope.dimension_count")
        if rope_dims is not None and int(rope_dims) != head_dim:
            raise ValueError(f"partial rotary embeddings ({rope_dims} of {head_dim} dims) are not supported")
        return cls(
            architecture="qwen2" if arch == "qwen2" else ("mistral" if sliding else "llama"),
            vocab_size=int(vocab),
            hidden_size=hidden,
            intermediate_size=int(meta[p + "feed_forward_length"]),
            num_layers=int(meta[p + "block_count"]),
            num_heads=num_heads,
            num_kv_heads=int(meta.get(p + "attention.head_count_kv") or num_heads),
            head_dim=head_dim,
            rms_norm_eps=float(meta.get(p + "attention.layer_norm_rms_epsilon", 1e-5)),
            rope_theta=float(meta.get(p + "rope.freq_base", 10000.0)),
            rope_scaling=RopeScaling.from_gguf(meta, p, rope_freq_factors),
            max_position_embeddings=int(meta.get(p + "context_length", 2048)),
            tie_word_embeddings=tied,
            attention_bias=arch == "qwen2",
            sliding_window=int(sliding) if sliding else None,
            dtype=dtype,
        )


def _hf_architecture(hf: Mapping[str, Any]) -> str:
    for name in hf.get("architectures") or ():
        if name in HF_ARCHITECTURES:
            return HF_ARCHITECTURES[name]
    model_type = hf.get("model_type")
    if model_type in HF_MODEL_TYPES:
        return HF_MODEL_TYPES[model_type]
    raise ValueError(
        f"unknown architecture {hf.get('architectures')!r} (model_type={model_type!r}); "
        f"supported: {sorted(HF_ARCHITECTURES)}"
    )


def _hf_rope_params(hf: Mapping[str, Any]) -> Mapping[str, Any] | None:
    # transformers >= 5 writes `rope_parameters` (theta included); older configs `rope_scaling`.
    return hf.get("rope_scaling") or hf.get("rope_parameters")


def _hf_rope_theta(hf: Mapping[str, Any]) -> float:
    if "rope_theta" in hf:
        return hf["rope_theta"]
    return (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0)
