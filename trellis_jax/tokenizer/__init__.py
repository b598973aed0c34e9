"""Tokenizer package: text <-> token ids, chat templates and streaming detokenization.

Owns `Tokenizer` (a Hugging Face `tokenizers.Tokenizer` built from GGUF metadata or an HF directory,
plus bos/eos/end-of-turn ids and the chat template), `IncrementalDetokenizer` (ids -> text pieces,
exact across multi-byte characters) and the errors they raise. May import tokenizers, jinja2 and
(lazily, only to read GGUF files) gguf; nothing from the rest of trellis_jax.
"""

from .errors import ChatTemplateError, TokenizerError
from .incremental import IncrementalDetokenizer
from .tokenizer import Tokenizer

__all__ = ["ChatTemplateError", "IncrementalDetokenizer", "Tokenizer", "TokenizerError"]
