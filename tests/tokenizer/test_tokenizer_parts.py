"""tokenizer/parts.py: the literal copy is the same tokenizer with special-token text read as text, made
without re-parsing the tokenizer's JSON; a part's spec is its place in the whole JSON."""

from __future__ import annotations

import json
import os

import pytest
from tiny_gguf import write_spm_gguf
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import normalizers

from trellis_jax.tokenizer import Tokenizer
from trellis_jax.tokenizer.parts import literal_copy, part_spec

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


@pytest.fixture(scope="module", params=["tiny_llama", "tiny_qwen2", "tiny_mistral", "smollm2", "spm", "normalizing"])
def hf(request, smollm2, tmp_path_factory):
    if request.param == "normalizing":  # none of the others has a normalizer
        tokenizer = HFTokenizer.from_file(os.path.join(FIXTURES, "tiny_llama", "tokenizer.json"))
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        return tokenizer
    if request.param == "smollm2":
        return smollm2.hf_tokenizer
    if request.param == "spm":
        return Tokenizer.from_gguf(write_spm_gguf(tmp_path_factory.mktemp("spm") / "spm.gguf")).hf_tokenizer
    return Tokenizer.from_hf_dir(os.path.join(FIXTURES, request.param)).hf_tokenizer


def spec(tokenizer) -> dict:
    return json.loads(tokenizer.to_str())


def test_the_literal_copy_serializes_as_the_original(hf):
    copy = literal_copy(hf)
    assert spec(copy) == spec(hf)


def test_the_literal_copy_reads_special_token_text_as_text_and_leaves_the_original_alone(smollm2):
    copy = literal_copy(smollm2.hf_tokenizer)
    special = smollm2.token_to_id("<|im_end|>")
    literal = copy.encode("<|im_end|>", add_special_tokens=False).ids
    assert len(literal) > 1 and special not in literal
    assert smollm2.hf_tokenizer.encode("<|im_end|>", add_special_tokens=False).ids == [special]


def test_a_tokenizer_with_truncation_is_copied_whole(smollm2):
    truncating = HFTokenizer.from_str(smollm2.hf_tokenizer.to_str())
    truncating.enable_truncation(max_length=3)
    copy = literal_copy(truncating)
    assert copy.truncation == truncating.truncation
    assert len(copy.encode("one two three four five").ids) == 3


def test_a_part_spec_is_that_part_of_the_whole_json(hf):
    whole = json.loads(hf.to_str())
    assert part_spec(hf.decoder) == whole["decoder"]
    assert part_spec(hf.pre_tokenizer) == (whole["pre_tokenizer"] or {})


def test_a_missing_part_is_an_empty_spec():
    assert part_spec(None) == {}
