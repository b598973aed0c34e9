"""`Tokenizer`: a Hugging Face `tokenizers.Tokenizer` plus the model's special tokens and chat template.

Built from a GGUF file (`from_gguf`) or a Hugging Face directory (`from_hf_dir`); token ids are the
model's. `encode` parses special-token text such as `<|im_start|>` by default and prepends BOS when the
model asks for it (never twice: a prompt whose text already starts with BOS is left alone); text with a
lone surrogate is a `TokenizerError`. `encode_chat` tokenizes the caller's text (message content,
tools, template variables) as plain text, so only the template's own markup yields special ids, unless
the tokenizer comes from `with_special_tokens_in_content(True)`.
`eos_token_ids` holds every id that ends a turn: EOS, the GGUF eot/eom ids, `generation_config.json`'s
eos ids, and well-known end-of-turn specials present in the vocabulary (`<|im_end|>`, `<|eot_id|>`, ...).
Instances are immutable after construction and safe to share between threads.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Iterable, Sequence
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from .chat_encoding import ContentShield, continuation_tokenizer, encode_shielded
from .chat_template import ChatTemplate
from .errors import ChatTemplateError, TokenizerError
from .parts import literal_copy
from .token_bytes import decoding_tables
from .valid_text import check_text, find_invalid_text

# Specials that end an assistant turn in common chat formats (llama.cpp treats the same set as end-of-generation).
END_OF_TURN_TOKENS = (
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
)


class Tokenizer:
    def __init__(
        self,
        hf_tokenizer: HFTokenizer,
        *,
        bos_token_id: int | None,
        eos_token_id: int | None,
        extra_eos_ids: Iterable[int] = (),
        unk_token_id: int | None = None,
        pad_token_id: int | None = None,
        add_bos: bool = False,
        chat_template: str | None = None,
        source: str = "<memory>",
    ):
        self.source = source
        self._tok = hf_tokenizer
        self._tok_literal = literal_copy(hf_tokenizer)  # for parse_special=False and the caller's chat content
        self.vocab_size = hf_tokenizer.get_vocab_size(with_added_tokens=True)
        added_tokens = hf_tokenizer.get_added_tokens_decoder()
        self.special_ids = frozenset(token_id for token_id, added in added_tokens.items() if added.special)
        self._special_strings = tuple(added_tokens[token_id].content for token_id in self.special_ids)
        self.special_tokens_in_content = False
        self.bos_token_id = self._checked_id(bos_token_id, "bos")
        self.eos_token_id = self._checked_id(eos_token_id, "eos")
        self.unk_token_id = self._checked_id(unk_token_id, "unk")
        self.pad_token_id = self._checked_id(pad_token_id, "pad")
        self.add_bos = bool(add_bos) and self.bos_token_id is not None
        self.eos_token_ids = self._end_of_turn_ids(extra_eos_ids)
        self.bos_token = self.id_to_token(self.bos_token_id) if self.bos_token_id is not None else None
        self.eos_token = self.id_to_token(self.eos_token_id) if self.eos_token_id is not None else None
        self.chat_template = (
            ChatTemplate(chat_template, self._template_specials(), origin=source) if chat_template else None
        )

    # --- construction -------------------------------------------------------------------------------

    @classmethod
    def from_gguf(cls, path: str | os.PathLike, *, reader=None) -> Tokenizer:
        """Tokenizer from a GGUF file's metadata; `reader` reuses an open `gguf.GGUFReader` of `path`."""
        from .gguf_builder import build_tokenizer
        from .gguf_vocab import read_gguf_vocab

        vocab = read_gguf_vocab(path, reader=reader)
        add_bos = vocab.add_bos if vocab.add_bos is not None else vocab.model == "llama"
        ids = vocab.special_ids
        return cls(
            build_tokenizer(vocab),
            bos_token_id=ids.get("bos"),
            eos_token_id=ids.get("eos"),
            extra_eos_ids=[ids[k] for k in ("eot", "eom") if k in ids],
            unk_token_id=ids.get("unk"),
            pad_token_id=ids.get("pad"),
            add_bos=add_bos,
            chat_template=vocab.chat_template,
            source=vocab.source,
        )

    @classmethod
    def from_hf_dir(cls, path: str | os.PathLike) -> Tokenizer:
        """Tokenizer from a Hugging Face directory (tokenizer.json, tokenizer_config.json, ...)."""
        from .hf_dir import read_hf_dir, token_string

        files = read_hf_dir(path)
        tok = files.tokenizer
        bos_id = _id_of(tok, token_string(files.config.get("bos_token")))
        eos_id = _id_of(tok, token_string(files.config.get("eos_token")))
        add_bos = files.config.get("add_bos_token")
        if add_bos is None:  # no explicit flag: does tokenizer.json's post-processor prepend BOS?
            with_specials = tok.encode("a", add_special_tokens=True).ids
            add_bos = (
                bos_id is not None
                and with_specials[:1] == [bos_id] != tok.encode("a", add_special_tokens=False).ids[:1]
            )
        if eos_id is None and files.generation_eos_ids:
            eos_id = files.generation_eos_ids[0]
        return cls(
            tok,
            bos_token_id=bos_id,
            eos_token_id=eos_id,
            extra_eos_ids=files.generation_eos_ids,
            unk_token_id=_id_of(tok, token_string(files.config.get("unk_token"))),
            pad_token_id=_id_of(tok, token_string(files.config.get("pad_token"))),
            add_bos=bool(add_bos),
            chat_template=files.chat_template,
            source=files.source,
        )

    def _token_or_none(self, token_id: int | None) -> str | None:
        return None if token_id is None else self.id_to_token(token_id)

    def _checked_id(self, token_id: int | None, name: str) -> int | None:
        if token_id is not None and not 0 <= token_id < self.vocab_size:
            raise TokenizerError(
                f"{self.source}: {name} token id {token_id} outside the vocabulary ({self.vocab_size})"
            )
        return token_id

    def _end_of_turn_ids(self, extra: Iterable[int]) -> tuple[int, ...]:
        ids = [self.eos_token_id] if self.eos_token_id is not None else []
        ids += [self._checked_id(int(i), "eos") for i in extra]
        for text in END_OF_TURN_TOKENS:
            token_id = self._tok.token_to_id(text)
            if token_id is not None and token_id in self.special_ids:
                ids.append(token_id)
        return tuple(dict.fromkeys(ids))  # dedupe, keep order

    # --- text <-> ids -------------------------------------------------------------------------------

    def encode(self, text: str, parse_special: bool = True, add_bos: bool | None = None) -> list[int]:
        """Token ids of `text`. `parse_special`: special-token text becomes its single id (else it is
        tokenized as plain characters). `add_bos`: None follows the model's own setting."""
        if not isinstance(text, str):
            raise TokenizerError(f"encode() takes a str, got {type(text).__name__}")
        check_text(text)
        tok = self._tok if parse_special else self._tok_literal
        return self._with_bos(tok.encode(text, add_special_tokens=False).ids, add_bos)

    def _with_bos(self, ids: list[int], add_bos: bool | None) -> list[int]:
        want_bos = self.add_bos if add_bos is None else add_bos and self.bos_token_id is not None
        if want_bos and ids[:1] != [self.bos_token_id]:
            ids.insert(0, self.bos_token_id)
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(self.check_ids(ids), skip_special_tokens=skip_special_tokens)

    def check_ids(self, ids: Sequence[int]) -> list[int]:
        """`ids` as a list of ints, or `TokenizerError` naming the first one outside the vocabulary."""
        ids = [int(i) for i in ids]
        for position, token_id in enumerate(ids):
            if not 0 <= token_id < self.vocab_size:
                raise TokenizerError(
                    f"token id {token_id} at position {position} is outside the vocabulary (0..{self.vocab_size - 1})"
                )
        return ids

    def id_to_token(self, token_id: int) -> str:
        token = self._tok.id_to_token(int(token_id))
        if token is None:
            raise TokenizerError(f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})")
        return token

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def is_special(self, token_id: int) -> bool:
        return token_id in self.special_ids

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes one token stands for (OpenAI logprobs report them): exact for byte-level
        vocabularies, where a token may hold part of a character; else the UTF-8 of its decoded text."""
        token_id = self.check_ids([token_id])[0]
        table, _ = decoding_tables(self)
        if table is not None:
            return table.get(token_id, skip_special_tokens=False)
        return self.decode([token_id], skip_special_tokens=False).encode("utf-8")

    @property
    def hf_tokenizer(self) -> HFTokenizer:
        """The underlying `tokenizers.Tokenizer` (do not mutate it)."""
        return self._tok

    # --- chat ---------------------------------------------------------------------------------------

    @property
    def has_chat_template(self) -> bool:
        return self.chat_template is not None

    def apply_chat_template(self, messages: Any, add_generation_prompt: bool = True, **kwargs: Any) -> str:
        """The prompt text for `messages` (a list of {'role', 'content'} dicts), HF semantics."""
        if self.chat_template is None:
            raise ChatTemplateError(
                f"{self.source}: this model has no chat template; send a plain prompt (completions) instead"
            )
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt, **kwargs)

    def _template_specials(self) -> dict[str, str | None]:
        return {
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "unk_token": self._token_or_none(self.unk_token_id),
            "pad_token": self._token_or_none(self.pad_token_id),
        }

    def with_chat_template(self, source: str, origin: str = "template") -> Tokenizer:
        """A copy that renders chats with the Jinja template `source` instead of the model's (ChatTemplateError
        if it does not parse, naming `origin`). Shares everything else."""
        clone = copy.copy(self)
        clone.chat_template = ChatTemplate(source, self._template_specials(), origin=origin)
        return clone

    def with_special_tokens_in_content(self, allowed: bool) -> Tokenizer:
        """A copy whose `encode_chat` parses special-token text in the caller's content too (`allowed`),
        as every chat encoding did before content was tokenized as text. Shares everything else."""
        clone = copy.copy(self)
        clone.special_tokens_in_content = bool(allowed)
        return clone

    def encode_chat(
        self, messages: Any, add_generation_prompt: bool = True, *, add_bos: bool | None = False, **kwargs: Any
    ) -> list[int]:
        """Token ids of the rendered chat. Special-token text inside `messages` or `kwargs` (tools,
        documents, template variables) is tokenized as plain text: only the template's markup becomes
        special ids (unless `special_tokens_in_content`). `add_bos`: like HF, the template supplies BOS
        itself (False: none is added); None follows the model's setting, as `encode` does."""
        invalid = find_invalid_text(messages, "messages") or find_invalid_text(kwargs)
        if invalid is not None:
            raise TokenizerError(f"{invalid[0]} {invalid[1]}")
        if self.special_tokens_in_content or self.chat_template is None:
            text = self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, **kwargs)
            return self.encode(text, parse_special=True, add_bos=add_bos)
        shield = ContentShield(self._special_strings, (messages, kwargs), self.chat_template.source)
        if shield.active:
            messages, kwargs = shield.shield(messages), shield.shield(kwargs)
        text = self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, **kwargs)
        ids = encode_shielded(
            text,
            shield,
            parsing=self._tok,
            literal=self._tok_literal,
            continuation=self._tok_continuation,
            special_ids=self.special_ids,
        )
        return self._with_bos(ids, add_bos)

    @functools.cached_property
    def _tok_continuation(self) -> HFTokenizer:
        return continuation_tokenizer(self._tok_literal)

    def __repr__(self) -> str:
        return f"Tokenizer(source={self.source!r}, vocab_size={self.vocab_size}, eos_token_ids={self.eos_token_ids})"


def _id_of(tok: HFTokenizer, token: str | None) -> int | None:
    return tok.token_to_id(token) if token else None
