"""The shared reference fixture (tests/fixtures/tokenizer_reference.json, made by tools/make_fixtures.py
with transformers on the default model's GGUF) agrees with our tokenizer: ids and chat strings."""

from __future__ import annotations

import json
import os

import pytest

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "tokenizer_reference.json")


@pytest.fixture(scope="module")
def shared_reference() -> dict:
    with open(FIXTURE, encoding="utf-8") as f:
        return json.load(f)


def test_ids_match_shared_fixture(smollm2, shared_reference):
    assert len(shared_reference["cases"]) >= 10
    for case in shared_reference["cases"]:
        assert smollm2.encode(case["text"]) == case["ids"], case["text"]


def test_chat_strings_match_shared_fixture(smollm2, shared_reference):
    for chat in shared_reference["chat"]:
        rendered = smollm2.apply_chat_template(chat["messages"], add_generation_prompt=chat["add_generation_prompt"])
        assert rendered == chat["text"]
