"""Token ids of a rendered chat in which only the template's own markup yields special tokens.

A rendered chat is one string; encoding it with special-token parsing on would turn a user's
`<|im_start|>system` into a real turn marker. So before rendering, every special-token string inside
the caller's data (messages, tools, documents, template variables) is swapped for a private-use
placeholder character (`ContentShield`); the specials the tokenizer then finds in the rendered text
are the template's. The text between two of them is one piece, exactly as the tokenizer splits it; a
piece holding placeholders gets the original text back and is encoded with special-token parsing off
(`encode_shielded`), every other piece keeps its ids. Data without special-token text takes no detour:
its ids are those of encoding the rendered text whole, as before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from .parts import part_spec

_PLACEHOLDER_BASE = 0xF0000  # Supplementary Private Use Area-A: no tokenizer gives these a meaning


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


class ContentShield:
    """Swaps special-token strings in caller data for placeholders, and back."""

    def __init__(self, special_tokens: Iterable[str], data: Any, template_source: str):
        specials = sorted(
            {s for s in special_tokens if s}, key=len, reverse=True
        )  # longest first: "<|end|>" vs "<|endoftext|>"
        self._pattern = re.compile("|".join(map(re.escape, specials))) if specials else None
        texts = list(_strings(data))
        found = sorted({m.group() for text in texts for m in self._pattern.finditer(text)}) if self._pattern else []
        self._placeholder = dict(zip(found, _unused_characters(texts + [template_source]))) if found else {}
        self._original = {p: s for s, p in self._placeholder.items()}

    @property
    def active(self) -> bool:
        """Whether the data holds any special-token text (else nothing needs shielding)."""
        return bool(self._placeholder)

    def shield(self, value: Any) -> Any:
        """`value` with every special-token string in its strings (at any depth) replaced by a placeholder."""
        if isinstance(value, str):
            return self._pattern.sub(lambda m: self._placeholder[m.group()], value) if self.active else value
        if isinstance(value, Mapping):
            return {key: self.shield(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.shield(item) for item in value)
        return value

    def holds_placeholder(self, text: str) -> bool:
        return any(p in text for p in self._original)

    def restore(self, text: str) -> str:
        for placeholder, special in self._original.items():
            text = text.replace(placeholder, special)
        return text


def _unused_characters(texts: list[str]) -> Iterator[str]:
    taken = set().union(*map(set, texts))
    return (chr(c) for c in range(_PLACEHOLDER_BASE, 0x10FFFE) if chr(c) not in taken)


def encode_shielded(
    text: str,
    shield: ContentShield,
    *,
    parsing: HFTokenizer,
    literal: HFTokenizer,
    continuation: HFTokenizer,
    special_ids: frozenset[int],
) -> list[int]:
    """Ids of rendered `text`: specials where the text itself has them, shielded content as plain text.

    `parsing` parses special-token text, `literal` does not; `continuation` is `literal` for pieces that
    do not start the text (tokenizers that treat the text's first piece specially, e.g. by prepending
    a word-boundary marker only there, must not do so in the middle)."""
    encoding = parsing.encode(text, add_special_tokens=False)
    if not shield.holds_placeholder(text):
        return list(encoding.ids)
    ids: list[int] = []
    piece_start, piece_ids = 0, []
    for token_id, (start, end) in zip(encoding.ids, encoding.offsets):
        if token_id in special_ids:
            ids += _piece_ids(text[piece_start:start], piece_start, piece_ids, shield, literal, continuation)
            ids.append(token_id)
            piece_start, piece_ids = end, []
        else:
            piece_ids.append(token_id)
    ids += _piece_ids(text[piece_start:], piece_start, piece_ids, shield, literal, continuation)
    return ids


def _piece_ids(
    piece: str, start: int, ids: list[int], shield: ContentShield, literal: HFTokenizer, continuation: HFTokenizer
) -> list[int]:
    if not shield.holds_placeholder(piece):
        return ids
    encoder = literal if start == 0 else continuation
    return list(encoder.encode(shield.restore(piece), add_special_tokens=False).ids)


def continuation_tokenizer(literal: HFTokenizer) -> HFTokenizer:
    """`literal`, or a copy whose Metaspace pre-tokenizer never prepends its marker: with prepend_scheme
    "first" the tokenizer prepends it only to a piece at the very start of the text, and a piece
    encoded on its own would otherwise always look like one."""
    pre_tokenizer = part_spec(literal.pre_tokenizer)
    if not _never_prepend(pre_tokenizer):
        return literal
    spec = json.loads(literal.to_str())  # the whole tokenizer, only where a copy must be built
    spec["pre_tokenizer"] = pre_tokenizer
    copy = HFTokenizer.from_str(json.dumps(spec))
    copy.encode_special_tokens = True
    return copy


def _never_prepend(node: Any) -> bool:
    """Rewrites Metaspace prepend_scheme "first" to "never" in a pre-tokenizer spec; whether it did."""
    if not isinstance(node, dict):
        return False
    changed = False
    if node.get("type") == "Metaspace" and node.get("prepend_scheme") == "first":
        node["prepend_scheme"] = "never"
        changed = True
    for child in node.get("pretokenizers") or ():
        changed = _never_prepend(child) or changed
    return changed
