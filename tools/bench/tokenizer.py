"""The model's tokenizer and chat template, as the workload generators need them.

`BenchTokenizer.load(path)` (a GGUF file or an HF directory) prefers Trellis' own `trellis_jax.tokenizer`; if
that package is not importable (it is built in parallel) it falls back to transformers' GGUF tokenizer,
which reads the same vocabulary and merges. `source` says which one was used (it goes into the results).
Prompts are rendered with the GGUF's own chat template, so every system sees the same text and ids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class BenchTokenizer:
    encode: Callable[[str], list[int]]  # special tokens in the text are parsed as specials
    render: Callable[[list[dict]], str]  # messages -> prompt text ending in the assistant header
    source: str

    def count(self, text: str) -> int:
        return len(self.encode(text))

    @classmethod
    def load(cls, model_path: Path) -> BenchTokenizer:
        """From a GGUF file or a Hugging Face directory (tokenizer.json + tokenizer_config.json)."""
        try:
            return _from_trellis(model_path)
        except ImportError:
            return _from_transformers(model_path)


def _from_trellis(model_path: Path) -> BenchTokenizer:
    from trellis_jax.tokenizer import Tokenizer

    is_dir = Path(model_path).is_dir()
    tok: Any = Tokenizer.from_hf_dir(str(model_path)) if is_dir else Tokenizer.from_gguf(str(model_path))
    return BenchTokenizer(
        encode=lambda text: list(tok.encode(text, parse_special=True)),
        render=lambda messages: tok.apply_chat_template(messages, add_generation_prompt=True),
        source="trellis_jax.tokenizer",
    )


def _from_transformers(model_path: Path) -> BenchTokenizer:
    from transformers import AutoTokenizer

    path = Path(model_path)
    tok = (
        AutoTokenizer.from_pretrained(str(path))
        if path.is_dir()
        else AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    )
    return BenchTokenizer(
        encode=lambda text: list(tok.encode(text, add_special_tokens=False)),
        render=lambda messages: tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
        source="transformers (GGUF tokenizer)",
    )
