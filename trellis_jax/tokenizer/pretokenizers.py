"""Pre-tokenizers for byte-level BPE vocabularies, chosen by GGUF's `tokenizer.ggml.pre`.

A GGUF file carries the vocabulary and merges but not the Hugging Face `tokenizer.json` pre-tokenizer;
llama.cpp names it instead (`tokenizer.ggml.pre`). Each entry here rebuilds the pre-tokenizer (and
normalizer, where the HF tokenizer has one) that the model's own `tokenizer.json` uses, so encoding
matches Hugging Face exactly, not just llama.cpp's approximation of it.

Unknown names raise `TokenizerError`: a wrong regex silently changes token ids, which is worse than
failing. Add a name here once its HF `tokenizer.json` has been checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from tokenizers import Regex, normalizers, pre_tokenizers

from .errors import TokenizerError

# Llama 3 (tiktoken cl100k-style): letters with one optional leading non-letter, numbers in runs of 1-3.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2 / Qwen2.5: like Llama 3 but every digit is its own piece.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Mistral's tekken vocabulary.
TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class PreTokenization(NamedTuple):
    normalizer: normalizers.Normalizer | None
    pre_tokenizer: pre_tokenizers.PreTokenizer
    # Llama 3's BPE takes a whole pre-token straight from the vocabulary before applying merges.
    ignore_merges: bool = False


def _gpt2() -> PreTokenization:
    # ByteLevel's built-in regex is GPT-2's: 's|'t|...| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    return PreTokenization(None, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))


def _digits_then_gpt2() -> PreTokenization:
    # StarCoder / SmolLM tokenizer.json: every digit isolated first, then GPT-2's regex.
    return PreTokenization(
        None,
        pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        ),
    )


def _split_then_bytes(pattern: str, normalizer=None, ignore_merges=False) -> Callable[[], PreTokenization]:
    def build() -> PreTokenization:
        return PreTokenization(
            normalizer,
            pre_tokenizers.Sequence(
                [
                    pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
                ]
            ),
            ignore_merges,
        )

    return build


def _qwen2() -> PreTokenization:
    # Qwen2's tokenizer.json normalizes to NFC before splitting.
    return _split_then_bytes(QWEN2_SPLIT, normalizers.NFC())()


PRE_TOKENIZERS: dict[str, Callable[[], PreTokenization]] = {
    "default": _gpt2,
    "gpt2": _gpt2,
    "gpt-2": _gpt2,
    "smollm": _digits_then_gpt2,
    "starcoder": _digits_then_gpt2,
    "refact": _digits_then_gpt2,
    "codeshell": _digits_then_gpt2,
    "llama3": _split_then_bytes(LLAMA3_SPLIT, ignore_merges=True),
    "llama-v3": _split_then_bytes(LLAMA3_SPLIT, ignore_merges=True),
    "llama-bpe": _split_then_bytes(LLAMA3_SPLIT, ignore_merges=True),
    "smaug-bpe": _split_then_bytes(LLAMA3_SPLIT, ignore_merges=True),
    "falcon3": _split_then_bytes(LLAMA3_SPLIT),
    "dbrx": _split_then_bytes(LLAMA3_SPLIT),
    "tekken": _split_then_bytes(TEKKEN_SPLIT),
    "qwen2": _qwen2,
    "deepseek-r1-qwen": _qwen2,
}


def pre_tokenization_for(name: str | None, *, source: str) -> PreTokenization:
    """The normalizer and pre-tokenizer for a GGUF `tokenizer.ggml.pre` value (None means "default")."""
    key = (name or "default").strip().lower()
    try:
        return PRE_TOKENIZERS[key]()
    except KeyError:
        raise TokenizerError(
            f"{source}: tokenizer.ggml.pre = {name!r} is not a supported pre-tokenizer "
            f"(supported: {', '.join(sorted(PRE_TOKENIZERS))}). Its split regex decides the token ids, "
            "so guessing would silently change them; load the model's Hugging Face directory instead."
        ) from None
