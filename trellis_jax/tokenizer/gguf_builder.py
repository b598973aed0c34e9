"""Build a Hugging Face `tokenizers.Tokenizer` from a `GGUFVocab`.

- `gpt2` vocabularies: byte-level BPE with the file's merges and the pre-tokenizer named by
  `tokenizer.ggml.pre` (see pretokenizers.py).
- `llama` vocabularies (sentencepiece BPE, Llama 1/2, Mistral): BPE with byte fallback, merges rebuilt
  from the token scores the way Hugging Face's converter does, `▁` as the space marker.
Token ids are the GGUF indices. CONTROL tokens become special added tokens (parsed in text, skippable on
decode); USER_DEFINED tokens become plain added tokens (parsed in text, kept on decode), as Hugging Face
marks them. Any other `tokenizer.ggml.model` raises `TokenizerError`.
"""

from __future__ import annotations

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from .errors import TokenizerError
from .gguf_vocab import BYTE, CONTROL, USER_DEFINED, GGUFVocab
from .pretokenizers import pre_tokenization_for


def build_tokenizer(vocab: GGUFVocab) -> Tokenizer:
    if vocab.model == "gpt2":
        tokenizer = _byte_level_bpe(vocab)
    elif vocab.model == "llama":
        tokenizer = _sentencepiece_bpe(vocab)
    else:
        raise TokenizerError(
            f"{vocab.source}: tokenizer.ggml.model = {vocab.model!r} is not supported "
            "(supported: 'gpt2' byte-level BPE, 'llama' sentencepiece BPE)"
        )
    _add_marked_tokens(tokenizer, vocab)
    return tokenizer


def _index(tokens: list[str]) -> dict[str, int]:
    # A few GGUF files repeat a token string; the first id wins (as in llama.cpp's text -> id map).
    index: dict[str, int] = {}
    for token_id, token in enumerate(tokens):
        index.setdefault(token, token_id)
    return index


def _byte_level_bpe(vocab: GGUFVocab) -> Tokenizer:
    if not vocab.merges:
        raise TokenizerError(f"{vocab.source}: a 'gpt2' vocabulary needs tokenizer.ggml.merges; the file has none")
    merges = []
    for line in vocab.merges:
        left, sep, right = line.partition(" ")
        if not sep:
            raise TokenizerError(f"{vocab.source}: malformed merge {line!r} (expected 'left right')")
        merges.append((left, right))
    pre = pre_tokenization_for(vocab.pre, source=vocab.source)
    tokenizer = Tokenizer(
        models.BPE(_index(vocab.tokens), merges, fuse_unk=False, byte_fallback=False, ignore_merges=pre.ignore_merges)
    )
    if pre.normalizer is not None:
        tokenizer.normalizer = pre.normalizer
    tokenizer.pre_tokenizer = pre.pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def merges_from_scores(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """Sentencepiece stores scores, not merges: every split of a token into two vocabulary tokens is a
    merge ranked by the merged token's score (ties by the ids of the parts), as HF's converter does."""
    index = _index(tokens)
    merges = []
    for token, score in zip(tokens, scores):
        local = [
            (token[:cut], token[cut:], score)
            for cut in range(1, len(token))
            if token[:cut] in index and token[cut:] in index
        ]
        local.sort(key=lambda merge: (index[merge[0]], index[merge[1]]))
        merges.extend(local)
    merges.sort(key=lambda merge: merge[2], reverse=True)  # stable: keeps the id order within a score
    return [(left, right) for left, right, _ in merges]


def _sentencepiece_bpe(vocab: GGUFVocab) -> Tokenizer:
    if vocab.scores is None and not vocab.merges:
        raise TokenizerError(f"{vocab.source}: a 'llama' vocabulary needs tokenizer.ggml.scores; the file has none")
    if vocab.merges:
        merges = [tuple(line.split(" ", 1)) for line in vocab.merges]
    else:
        normal = [t if k not in (CONTROL, BYTE) else "" for t, k in zip(vocab.tokens, vocab.token_types)]
        merges = [m for m in merges_from_scores(normal, list(vocab.scores)) if m[0] and m[1]]
    unk_id = vocab.special_ids.get("unk")
    unk = vocab.tokens[unk_id] if unk_id is not None else None
    tokenizer = Tokenizer(models.BPE(_index(vocab.tokens), merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    prefix = vocab.add_space_prefix is not False  # llama.cpp's default for sentencepiece is True
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="first" if prefix else "never", split=False
    )
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(steps)
    return tokenizer


def _add_marked_tokens(tokenizer: Tokenizer, vocab: GGUFVocab) -> None:
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    special, plain = [], []
    for token, kind in zip(vocab.tokens, vocab.token_types):
        if kind == CONTROL:
            special.append(AddedToken(token, special=True, normalized=False))
        elif kind == USER_DEFINED:
            plain.append(AddedToken(token, special=False, normalized=False))
    tokenizer.add_special_tokens(special)
    tokenizer.add_tokens(plain)
    if tokenizer.get_vocab_size(with_added_tokens=True) != size:
        raise TokenizerError(f"{vocab.source}: marking special tokens grew the vocabulary; the file is inconsistent")
