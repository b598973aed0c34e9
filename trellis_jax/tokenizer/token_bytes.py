"""The raw bytes each token id stands for, for tokenizers whose decoder is byte-level (GPT-2 style).

`tokenizers`' ByteLevel decoder maps every character of a token through GPT-2's byte alphabet (`Ġ` is
a space, `Ċ` a newline, ...), or, when a token holds a character outside that alphabet (an added
token like `<|x y|>`), takes the token's own UTF-8 bytes; the decoded text is the concatenation of
these bytes decoded as UTF-8 with U+FFFD for invalid sequences. `TokenBytes` reproduces exactly that
per id, so a stream can be decoded incrementally without re-decoding the whole sequence.
`decoding_tables(tokenizer)` builds, once per `Tokenizer`, what both `Tokenizer.token_bytes` and the
`IncrementalDetokenizer` decode with (it lives here so neither of those modules imports the other).
"""

from __future__ import annotations

import functools
import json
import re

from tokenizers import Tokenizer as HFTokenizer

from .parts import part_spec


@functools.lru_cache(maxsize=1)
def byte_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte value, inverted (char -> byte)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def has_byte_level_decoder(decoder: dict) -> bool:
    """`decoder`: the tokenizer's decoder spec (parts.part_spec)."""
    return decoder.get("type") == "ByteLevel"


_BYTE_FALLBACK_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def byte_fallback_ids(tok: HFTokenizer, decoder: dict) -> frozenset[int]:
    """Ids of sentencepiece byte tokens (`<0xE2>`) when the decoder (its spec) has a ByteFallback step, else
    empty. ByteFallback decodes each run of consecutive byte tokens as a whole: one invalid byte in a run
    turns every byte of the run into U+FFFD, so a run's text is only final once a non-byte token ends it."""
    if '"ByteFallback"' not in json.dumps(decoder):
        return frozenset()
    return frozenset(
        i for token, i in tok.get_vocab(with_added_tokens=False).items() if _BYTE_FALLBACK_TOKEN.fullmatch(token)
    )


class TokenBytes:
    """id -> bytes for a byte-level tokenizer; special ids map to b"" when skipped. Computed lazily and cached."""

    def __init__(self, tok: HFTokenizer, special_ids: frozenset[int]):
        self._tok = tok
        self._special_ids = special_ids
        self._cache: dict[int, bytes] = {}

    def get(self, token_id: int, skip_special_tokens: bool) -> bytes:
        if skip_special_tokens and token_id in self._special_ids:
            return b""
        cached = self._cache.get(token_id)
        if cached is None:
            cached = self._cache[token_id] = self._compute(token_id)
        return cached

    def _compute(self, token_id: int) -> bytes:
        token = self._tok.id_to_token(token_id)
        if token is None:
            raise ValueError(f"token id {token_id} is outside the vocabulary")
        alphabet = byte_alphabet()
        if all(ch in alphabet for ch in token):
            return bytes(alphabet[ch] for ch in token)
        return token.encode("utf-8")


def decoding_tables(tokenizer) -> tuple[TokenBytes | None, frozenset[int]]:
    """(TokenBytes, empty) for a byte-level `Tokenizer`, else (None, its byte-fallback ids)."""
    # Built once per Tokenizer and shared by all its detokenizers (the Tokenizer itself stays read-only).
    tables = tokenizer.__dict__.get("_detokenizer_tables")
    if tables is None:
        hf = tokenizer.hf_tokenizer
        decoder = part_spec(hf.decoder)
        if has_byte_level_decoder(decoder):
            tables = (TokenBytes(hf, tokenizer.special_ids), frozenset())
        else:
            tables = (None, byte_fallback_ids(hf, decoder))
        tokenizer.__dict__["_detokenizer_tables"] = tables
    return tables
