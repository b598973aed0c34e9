"""LoadedModel: what every loader returns (docs/CONTRACTS.md, "Checkpoints")."""

from __future__ import annotations

import dataclasses
from typing import Any

from trellis_jax.model import ModelConfig


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    config: ModelConfig
    params: dict  # pytree laid out as trellis_jax.model.params documents, in config.dtype
    tokenizer: Any  # trellis_jax.tokenizer.Tokenizer, or None for a weights-only checkpoint
    source: str  # where it came from: a file, a directory or "preset:<name>"
