"""Sentencepiece ('llama') GGUF vocabularies match transformers' converter; bad GGUF input fails clearly."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_gguf import spm_vocab, write_gguf, write_spm_gguf

from trellis_jax.tokenizer import IncrementalDetokenizer, Tokenizer, TokenizerError


@pytest.fixture(scope="module")
def spm(tmp_path_factory) -> Tokenizer:
    return Tokenizer.from_gguf(write_spm_gguf(tmp_path_factory.mktemp("spm") / "spm.gguf"))


def test_spm_ids_and_decode_match_transformers(spm, reference):
    for e in reference["spm_encodings"]:
        assert spm.encode(e["text"], add_bos=False) == e["ids"], e["text"]
        assert spm.decode(e["ids"], skip_special_tokens=True) == e["decoded_skip"], e["text"]
        assert spm.decode(e["ids"], skip_special_tokens=False) == e["decoded"], e["text"]


def test_spm_adds_bos_by_default(spm):
    assert spm.add_bos and spm.encode("hello")[0] == spm.bos_token_id == 1
    assert spm.eos_token_ids == (2,)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(st.integers(0, len(spm_vocab()[0]) - 1), max_size=30))
def test_spm_stream_matches_decode(spm, ids):
    detok = IncrementalDetokenizer(spm)
    pieces = [detok.push(i) for i in ids]
    assert "".join(pieces) + detok.flush() == spm.decode(ids)


def test_spm_stream_emits_byte_run_once_a_normal_token_ends_it(spm):
    detok = IncrementalDetokenizer(spm)
    ids = spm.encode("😀 the", add_bos=False)  # four byte-fallback tokens, then ▁the
    pieces = [detok.push(i) for i in ids]
    assert pieces[-1] == "😀 the" and not any(pieces[:-1])
    assert detok.flush() == ""


def _byte_level_vocab():
    tokens = ["<|endoftext|>", "a", "b", "Ġ", "ab"]
    return dict(tokens=tokens, token_types=[3, 1, 1, 1, 1], merges=["a b"], bos=None, eos=0, unk=None)


def test_unknown_pre_tokenizer_is_a_clear_error(tmp_path):
    path = write_gguf(tmp_path / "x.gguf", model="gpt2", pre="mystery-regex", **_byte_level_vocab())
    with pytest.raises(TokenizerError, match="tokenizer.ggml.pre = 'mystery-regex' is not a supported"):
        Tokenizer.from_gguf(path)


def test_known_pre_tokenizers_build(tmp_path):
    for pre in ("gpt2", "llama-bpe", "qwen2", "smollm"):
        tok = Tokenizer.from_gguf(write_gguf(tmp_path / f"{pre}.gguf", model="gpt2", pre=pre, **_byte_level_vocab()))
        assert tok.encode("ab a") == [4, 3, 1]


def test_unsupported_vocabulary_type(tmp_path):
    path = write_gguf(tmp_path / "x.gguf", model="bert", **_byte_level_vocab())
    with pytest.raises(TokenizerError, match="tokenizer.ggml.model = 'bert' is not supported"):
        Tokenizer.from_gguf(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(TokenizerError, match="no such GGUF file"):
        Tokenizer.from_gguf(tmp_path / "absent.gguf")
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file at all")
    with pytest.raises(TokenizerError, match="bogus.gguf: not a readable GGUF file"):
        Tokenizer.from_gguf(bogus)


def test_special_id_outside_vocabulary(tmp_path):
    vocab = {**_byte_level_vocab(), "eos": 99}
    with pytest.raises(TokenizerError, match="eos_token_id = 99 is outside the vocabulary"):
        Tokenizer.from_gguf(write_gguf(tmp_path / "x.gguf", model="gpt2", **vocab))
