"""Write tiny tokenizer-only GGUF files for tests (no tensors): a sentencepiece ('llama') vocabulary
with byte fallback, and variants with a bad model or pre-tokenizer name for the error paths."""

from __future__ import annotations

import os

SPM_PIECES = [
    "▁", "▁h", "▁he", "▁hel", "▁hell", "▁hello", "▁w", "▁wo", "▁wor", "▁worl", "▁world",
    "h", "e", "l", "o", "w", "r", "d", "ll", "▁t", "▁th", "▁the", "▁a", "a", "t", "n", "▁an",
]  # fmt: skip


def spm_vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + SPM_PIECES
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i) for i in range(len(SPM_PIECES))]
    types = [2, 3, 3] + [6] * 256 + [1] * len(SPM_PIECES)
    return tokens, scores, types


def write_gguf(path: str | os.PathLike, *, model: str, tokens, token_types, scores=None, merges=None,
               pre: str | None = None, bos: int | None = 1, eos: int | None = 2, unk: int | None = 0,
               chat_template: str | None = None) -> str:  # fmt: skip
    import gguf

    writer = gguf.GGUFWriter(os.fspath(path), "llama")
    writer.add_tokenizer_model(model)
    if pre is not None:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    if scores is not None:
        writer.add_token_scores(scores)
    if merges is not None:
        writer.add_token_merges(merges)
    for value, add in ((bos, writer.add_bos_token_id), (eos, writer.add_eos_token_id), (unk, writer.add_unk_token_id)):
        if value is not None:
            add(value)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return os.fspath(path)


def write_spm_gguf(path) -> str:
    tokens, scores, types = spm_vocab()
    return write_gguf(path, model="llama", tokens=tokens, token_types=types, scores=scores)
