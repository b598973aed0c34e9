"""Shared session fixtures. Keep this small: heavy objects are loaded once per test session.

fixtures_dir   tests/fixtures (reference data made by tools/make_fixtures.py)
default_model  the default model (SmolLM2-135M-Instruct GGUF, float32) as a LoadedModel
tiny_model     factory: tiny_model("llama" | "qwen2" | "mistral") -> LoadedModel of a committed tiny
               random checkpoint (HF dir with a tiny tokenizer), cached per session
"""

import functools
import os
import pathlib

import pytest

FIXTURES_DIR = pathlib.Path(__file__).parent / "fixtures"
# The matmul backend by the op's rules, not by timing (pallas_kernels/matmul/calibrate.py): a timed choice
# would make which kernel a test runs a race. Child processes inherit it. The calibration tests turn it on.
os.environ.setdefault("TRELLIS_CALIBRATION", "off")


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def default_model():
    pytest.importorskip("gguf")
    from trellis_jax.checkpoints import load_model

    return load_model()


@pytest.fixture(scope="session")
def tiny_model():
    from trellis_jax.checkpoints import load_model

    @functools.cache
    def load(arch: str, dtype: str = "float32"):
        return load_model(str(FIXTURES_DIR / f"tiny_{arch}"), dtype=dtype)

    return load
