"""A `tokenizers.Tokenizer`'s parts, read and shared without serializing the whole tokenizer.

    part_spec(tokenizer.decoder | tokenizer.pre_tokenizer) -> dict   that part's JSON spec, {} where none
    literal_copy(tokenizer) -> tokenizers.Tokenizer                  a tokenizer that encodes as `tokenizer`
        does but treats special-token text as plain text (encode_special_tokens on): a separate object
        because that flag lives on the Rust tokenizer and flipping it would race between threads.

Why: `json.loads(tokenizer.to_str())` or `from_str(tokenizer.to_str())` serializes and parses the whole
tokenizer, vocabulary and merges included (~1 s for a 49k-token vocabulary on a loaded CPU), to read a few
bytes or to make a copy. A part serializes alone (the pickle state `tokenizers` gives it), with the same JSON
as its place in the whole. The copy shares the original's model, normalizer, pre-tokenizer, post-processor
and decoder (read-only here) and re-adds its added tokens in id order, as loading its JSON does; where the
ids or flags would not come out the same, or padding or truncation is on, it is built from the JSON instead.
"""

from __future__ import annotations

import json
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

_PARTS = ("normalizer", "pre_tokenizer", "post_processor", "decoder")


def part_spec(part: Any) -> dict:
    return {} if part is None else json.loads(part.__getstate__())


def literal_copy(tokenizer: HFTokenizer) -> HFTokenizer:
    copy = _shared_copy(tokenizer) or HFTokenizer.from_str(tokenizer.to_str())
    copy.encode_special_tokens = True
    return copy


def _shared_copy(tokenizer: HFTokenizer) -> HFTokenizer | None:
    if tokenizer.padding is not None or tokenizer.truncation is not None:
        return None
    copy = HFTokenizer(tokenizer.model)
    for name in _PARTS:
        part = getattr(tokenizer, name)
        if part is not None:
            setattr(copy, name, part)
    for _, token in sorted(tokenizer.get_added_tokens_decoder().items()):
        (copy.add_special_tokens if token.special else copy.add_tokens)([token])
    return copy if _added(copy) == _added(tokenizer) else None


def _added(tokenizer: HFTokenizer) -> dict[int, tuple]:
    return {
        token_id: (t.content, t.special, t.normalized, t.lstrip, t.rstrip, t.single_word)
        for token_id, t in tokenizer.get_added_tokens_decoder().items()
    }
