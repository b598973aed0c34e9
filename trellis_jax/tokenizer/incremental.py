"""`IncrementalDetokenizer`: turns a stream of token ids into a stream of text pieces.

Contract: `"".join(push(i) for i in ids) + flush() == tokenizer.decode(ids, skip_special_tokens)`, and
no piece ever ends in a U+FFFD that only stands for an incomplete UTF-8 sequence (a character split
across tokens is emitted once it is complete; `flush()` emits what is left, as `decode` would).
Streaming responses and stop-string matching rely on this.

Byte-level vocabularies (GPT-2, Llama 3, Qwen2, SmolLM) take the fast path: each id's bytes go through
an incremental UTF-8 decoder, O(1) per token. Other decoders (sentencepiece with byte fallback, where
the first token's leading space is stripped) re-decode the stream's ids each push (O(n) per token) and
emit the new suffix. They hold back a trailing run of byte-fallback tokens (the run decodes as a whole:
a later invalid byte turns the entire run into U+FFFD) and, for any other decoder, a trailing U+FFFD.
"""

from __future__ import annotations

import codecs

from .token_bytes import decoding_tables
from .tokenizer import Tokenizer

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Tokenizer, *, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.token_ids: list[int] = []
        self._emitted: list[str] = []
        self._emitted_len = 0
        self._bytes, self._byte_fallback_ids = decoding_tables(tokenizer)
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        return "".join(self._emitted)

    def push(self, token_id: int) -> str:
        """Add one generated id; return the text it completes (possibly "")."""
        token_id = self.tokenizer.check_ids([token_id])[0]
        self.token_ids.append(token_id)
        if self._bytes is not None:
            piece = self._utf8.decode(self._bytes.get(token_id, self.skip_special_tokens), final=False)
        else:
            piece = self._redecode_suffix(final=False)
        return self._emit(piece)

    def flush(self) -> str:
        """End of stream: emit whatever was held back (an incomplete sequence becomes U+FFFD)."""
        if self._bytes is not None:
            return self._emit(self._utf8.decode(b"", final=True))
        return self._emit(self._redecode_suffix(final=True))

    def _emit(self, piece: str) -> str:
        if piece:
            self._emitted.append(piece)
            self._emitted_len += len(piece)
        return piece

    def _redecode_suffix(self, *, final: bool) -> str:
        stable = len(self.token_ids) if final else self._stable_length()
        text = self.tokenizer.decode(self.token_ids[:stable], skip_special_tokens=self.skip_special_tokens)
        if not final:
            text = text.rstrip(_REPLACEMENT)  # may be an incomplete character: wait for the next id
        return text[self._emitted_len :]

    def _stable_length(self) -> int:
        """Ids whose text is final: all but a trailing run of byte-fallback tokens (skipped specials
        inside the run do not end it, since the decoder never sees them)."""
        stable = len(self.token_ids)
        skipped = self.tokenizer.special_ids if self.skip_special_tokens else frozenset()
        while stable and (
            self.token_ids[stable - 1] in self._byte_fallback_ids or self.token_ids[stable - 1] in skipped
        ):
            stable -= 1
        return stable
