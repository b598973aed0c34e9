"""A word-level fake tokenizer for the benchmark-harness tests (fast; the real one takes seconds)."""

import pathlib
import sys

import pytest

# tools/ is not an installed package: make the repo root importable even under a bare `pytest`.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from tools.bench.tokenizer import BenchTokenizer


def _render(messages):
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + "<|im_start|>assistant\n"


def _encoder():
    vocab: dict[str, int] = {}
    return lambda text: [vocab.setdefault(word, len(vocab)) for word in text.split()]


@pytest.fixture
def word_tokenizer():
    return BenchTokenizer(encode=_encoder(), render=_render, source="words")
