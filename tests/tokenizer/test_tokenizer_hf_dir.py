"""Tokenizer.from_hf_dir reads tokenizer.json, tokenizer_config.json, chat_template.jinja and
generation_config.json the way transformers does."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers, processors

from trellis_jax.tokenizer import Tokenizer, TokenizerError

SMOLLM2_TEMPLATE_KEY = "smollm2"


def write_dir(path, hf_tokenizer, config=None, generation=None, jinja=None):
    path.mkdir(exist_ok=True)
    hf_tokenizer.save(str(path / "tokenizer.json"))
    if config is not None:
        (path / "tokenizer_config.json").write_text(json.dumps(config))
    if generation is not None:
        (path / "generation_config.json").write_text(json.dumps(generation))
    if jinja is not None:
        (path / "chat_template.jinja").write_text(jinja)
    return path


@pytest.fixture(scope="module")
def smollm2_dir(smollm2, tmp_path_factory):
    config = {
        "bos_token": "<|im_start|>",
        "eos_token": {"content": "<|im_end|>", "special": True},
        "chat_template": smollm2.chat_template.source,
    }
    return write_dir(tmp_path_factory.mktemp("hf") / "smollm2", smollm2.hf_tokenizer, config, {"eos_token_id": [2, 0]})


def test_hf_dir_ids_match_reference(smollm2_dir, reference):
    tok = Tokenizer.from_hf_dir(smollm2_dir)
    for e in reference["encodings"]:
        assert tok.encode(e["text"]) == e["ids"], e["text"]


def test_hf_dir_special_tokens_and_eos_ids(smollm2_dir):
    tok = Tokenizer.from_hf_dir(smollm2_dir)
    assert (tok.bos_token_id, tok.eos_token_id) == (1, 2)
    assert set(tok.eos_token_ids) == {2, 0}
    assert tok.add_bos is False


def test_hf_dir_chat_template_matches_reference(smollm2_dir, reference):
    tok = Tokenizer.from_hf_dir(smollm2_dir)
    chat = next(c for c in reference["chats"] if c["template"] == SMOLLM2_TEMPLATE_KEY)
    assert (
        tok.apply_chat_template(chat["messages"], add_generation_prompt=chat["add_generation_prompt"]) == chat["text"]
    )


def _bos_adding_tokenizer() -> HFTokenizer:
    tok = HFTokenizer(models.WordLevel({"<s>": 0, "</s>": 1, "hi": 2, "<unk>": 3}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tok.add_special_tokens(["<s>", "</s>"])
    return tok


def test_bos_from_post_processor_when_config_is_silent(tmp_path):
    tok = Tokenizer.from_hf_dir(
        write_dir(tmp_path / "d", _bos_adding_tokenizer(), {"bos_token": "<s>", "eos_token": "</s>"})
    )
    assert tok.add_bos is True
    assert tok.encode("hi") == [0, 2]


def test_explicit_add_bos_token_wins(tmp_path):
    config = {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": False}
    tok = Tokenizer.from_hf_dir(write_dir(tmp_path / "d", _bos_adding_tokenizer(), config))
    assert tok.encode("hi") == [2]


def test_chat_template_jinja_file(tmp_path):
    d = write_dir(
        tmp_path / "d",
        _bos_adding_tokenizer(),
        {"bos_token": "<s>"},
        jinja="{{ bos_token }}{{ messages[0]['content'] }}",
    )
    assert Tokenizer.from_hf_dir(d).apply_chat_template([{"role": "user", "content": "hi"}]) == "<s>hi"


def test_missing_tokenizer_json(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        Tokenizer.from_hf_dir(tmp_path)


def test_corrupt_config_names_the_file(tmp_path):
    d = write_dir(tmp_path / "d", _bos_adding_tokenizer())
    (d / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="tokenizer_config.json: invalid JSON"):
        Tokenizer.from_hf_dir(d)
