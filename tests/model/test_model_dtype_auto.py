"""dtype="auto": bfloat16 where this machine multiplies it natively, float32 elsewhere; presets may pin one."""

from __future__ import annotations

import pytest

from trellis_jax import dtypes
from trellis_jax.checkpoints import load_model
from trellis_jax.engine.config import EngineConfig


def test_explicit_dtypes_pass_through_unchanged():
    assert dtypes.resolve_dtype("float32") == "float32"
    assert dtypes.resolve_dtype("bfloat16") == "bfloat16"


@pytest.mark.parametrize("native, expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_follows_native_bfloat16_support(monkeypatch, native, expected):
    monkeypatch.setattr(dtypes, "native_bfloat16", lambda: native)
    assert dtypes.resolve_dtype("auto") == expected


def test_unknown_dtype_is_a_clear_error():
    with pytest.raises(ValueError, match="dtype must be one of"):
        dtypes.resolve_dtype("float16")
    with pytest.raises(ValueError, match="dtype must be one of"):
        EngineConfig(dtype="fp8")


def test_engine_default_is_auto():
    assert EngineConfig().dtype == "auto"


def test_auto_keeps_a_preset_s_pinned_dtype(monkeypatch):
    monkeypatch.setattr(dtypes, "native_bfloat16", lambda: True)
    assert load_model("tiny-llama", dtype="auto").config.dtype == "float32"  # the preset pins float32


def test_auto_resolves_for_a_checkpoint_without_a_preset(monkeypatch, tmp_path):
    monkeypatch.setattr(dtypes, "native_bfloat16", lambda: True)
    from trellis_jax.checkpoints.presets import resolve_preset

    path, _ = resolve_preset("tiny-llama")
    assert load_model(path, dtype="auto").config.dtype == "bfloat16"
