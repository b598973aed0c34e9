"""The default model's tokenizer built from GGUF metadata matches Hugging Face transformers' ids."""

from __future__ import annotations

import pytest

from trellis_jax.tokenizer import TokenizerError


def test_ids_match_reference_on_varied_texts(smollm2, reference):
    mismatches = [
        (e["text"], smollm2.encode(e["text"]), e["ids"])
        for e in reference["encodings"]
        if smollm2.encode(e["text"]) != e["ids"]
    ]
    assert not mismatches


def test_literal_special_text_matches_reference_split_special_tokens(smollm2, reference):
    for e in reference["encodings"]:
        assert smollm2.encode(e["text"], parse_special=False) == e["ids_literal_specials"], e["text"]


def test_special_token_text_becomes_one_id(smollm2):
    assert smollm2.encode("<|im_start|>") == [smollm2.token_to_id("<|im_start|>")]
    assert len(smollm2.encode("<|im_start|>", parse_special=False)) > 1


def test_decode_matches_reference(smollm2, reference):
    for e in reference["encodings"]:
        assert smollm2.decode(e["ids"], skip_special_tokens=False) == e["decoded"]
        assert smollm2.decode(e["ids"], skip_special_tokens=True) == e["decoded_skip"]


def test_special_ids_and_vocab(smollm2, reference):
    assert smollm2.vocab_size == 49152
    assert smollm2.bos_token == reference["bos_token"] == "<|im_start|>"
    assert smollm2.eos_token == reference["eos_token"] == "<|im_end|>"
    assert smollm2.id_to_token(smollm2.bos_token_id) == "<|im_start|>"


def test_eos_token_ids_include_every_end_of_turn_token(smollm2):
    assert smollm2.eos_token_ids[0] == smollm2.eos_token_id
    assert smollm2.token_to_id("<|im_end|>") in smollm2.eos_token_ids
    assert smollm2.token_to_id("<|endoftext|>") in smollm2.eos_token_ids
    assert smollm2.token_to_id("<|im_start|>") not in smollm2.eos_token_ids


def test_no_bos_added_when_gguf_says_so(smollm2):
    assert smollm2.add_bos is False
    assert smollm2.encode("hi")[0] != smollm2.bos_token_id


def test_bos_added_on_request_but_never_twice(smollm2):
    bos = smollm2.bos_token_id
    assert smollm2.encode("hi", add_bos=True)[:1] == [bos]
    assert smollm2.encode("<|im_start|>hi", add_bos=True).count(bos) == 1


def test_decode_rejects_ids_outside_vocabulary(smollm2):
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        smollm2.decode([1, 49152])
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        smollm2.decode([-1])


def test_encode_rejects_non_text(smollm2):
    with pytest.raises(TokenizerError, match="takes a str"):
        smollm2.encode(b"bytes")


def test_token_bytes_are_raw_bytes_even_for_partial_characters(smollm2):
    ids = smollm2.encode("你好 world")
    assert b"".join(smollm2.token_bytes(i) for i in ids) == "你好 world".encode()
    assert smollm2.token_bytes(smollm2.token_to_id("<|im_end|>")) == b"<|im_end|>"


def test_unk_and_pad_ids_from_metadata(smollm2):
    assert (smollm2.unk_token_id, smollm2.pad_token_id) == (0, 2)
    assert smollm2.chat_template.special_tokens["pad_token"] == "<|im_end|>"
