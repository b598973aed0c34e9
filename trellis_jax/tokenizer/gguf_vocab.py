"""Read the tokenizer metadata of a GGUF file into plain Python data (`GGUFVocab`).

`gguf` is imported lazily (the GPU image may not ship it); only the `tokenizer.*` fields are read, the
tensors are never touched. Missing or malformed fields raise `TokenizerError` naming the file and key.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from .errors import TokenizerError

# llama.cpp token types (gguf.TokenType).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclasses.dataclass(frozen=True)
class GGUFVocab:
    source: str
    model: str  # tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (sentencepiece)
    pre: str | None  # tokenizer.ggml.pre: names the pre-tokenizer regex
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None
    merges: list[str] | None
    special_ids: dict[str, int]  # bos / eos / unk / pad / eot / eom -> id, only those present
    add_bos: bool | None  # None: the file does not say (llama.cpp then defaults by vocabulary type)
    add_eos: bool
    add_space_prefix: bool | None
    chat_template: str | None


_SPECIAL_KEYS = {
    "bos": "tokenizer.ggml.bos_token_id",
    "eos": "tokenizer.ggml.eos_token_id",
    "unk": "tokenizer.ggml.unknown_token_id",
    "pad": "tokenizer.ggml.padding_token_id",
    "eot": "tokenizer.ggml.eot_token_id",
    "eom": "tokenizer.ggml.eom_token_id",
}


def _open_reader(path: str):
    try:
        import gguf  # lazy: optional on the GPU image
    except ImportError as exc:
        raise TokenizerError(f"{path}: reading GGUF needs the 'gguf' package (pip install gguf)") from exc
    if not os.path.isfile(path):
        raise TokenizerError(f"{path}: no such GGUF file")
    try:
        return gguf.GGUFReader(path, "r")
    except Exception as exc:  # gguf raises ValueError/struct errors/OSError on bad or truncated files
        raise TokenizerError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from exc


def _field(reader, key: str, path: str, *, required: bool = False) -> Any:
    field = reader.fields.get(key)
    if field is None:
        if required:
            raise TokenizerError(f"{path}: GGUF metadata has no '{key}'; cannot build its tokenizer")
        return None
    try:
        return field.contents()
    except Exception as exc:
        raise TokenizerError(f"{path}: GGUF metadata '{key}' is malformed ({exc})") from exc


def _optional_bool(value) -> bool | None:
    return None if value is None else bool(value)


def read_gguf_vocab(path: str | os.PathLike, reader=None) -> GGUFVocab:
    """Parse the `tokenizer.*` metadata of the GGUF file at `path`.

    Opening a GGUF file parses all its metadata (seconds for a 49k vocabulary): a caller that already
    holds a `gguf.GGUFReader` for the same file passes it as `reader` to skip that."""
    path = os.fspath(path)
    reader = reader if reader is not None else _open_reader(path)
    tokens = _field(reader, "tokenizer.ggml.tokens", path, required=True)
    token_types = _field(reader, "tokenizer.ggml.token_type", path) or [NORMAL] * len(tokens)
    if len(token_types) != len(tokens):
        raise TokenizerError(
            f"{path}: tokenizer.ggml.token_type has {len(token_types)} entries for {len(tokens)} tokens"
        )
    special_ids = {}
    for name, key in _SPECIAL_KEYS.items():
        value = _field(reader, key, path)
        if value is not None:
            if not 0 <= int(value) < len(tokens):
                raise TokenizerError(f"{path}: {key} = {value} is outside the vocabulary (size {len(tokens)})")
            special_ids[name] = int(value)
    return GGUFVocab(
        source=path,
        model=_field(reader, "tokenizer.ggml.model", path, required=True),
        pre=_field(reader, "tokenizer.ggml.pre", path),
        tokens=list(tokens),
        token_types=[int(t) for t in token_types],
        scores=_field(reader, "tokenizer.ggml.scores", path),
        merges=_field(reader, "tokenizer.ggml.merges", path),
        special_ids=special_ids,
        add_bos=_optional_bool(_field(reader, "tokenizer.ggml.add_bos_token", path)),
        add_eos=bool(_field(reader, "tokenizer.ggml.add_eos_token", path) or False),
        add_space_prefix=_optional_bool(_field(reader, "tokenizer.ggml.add_space_prefix", path)),
        chat_template=_field(reader, "tokenizer.chat_template", path),
    )
