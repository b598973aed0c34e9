"""System registry: unknown names are errors, absent peers are reported with the reason."""

import pytest

from tools.bench import systems


def test_unknown_system_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown system"):
        systems.missing("vllm")


def test_a_system_whose_module_is_absent_says_which(monkeypatch):
    monkeypatch.setitem(systems.REQUIREMENTS, "hf", ("surely_not_installed_module_xyz",))
    assert "surely_not_installed_module_xyz" in systems.missing("hf")


def test_a_system_whose_modules_import_is_available(monkeypatch):
    monkeypatch.setitem(systems.REQUIREMENTS, "hf", ("json",))
    assert systems.missing("hf") is None


@pytest.mark.parametrize("file,label", [("m.F32.gguf", "F32"), ("m.BF16.gguf", "BF16"), ("m.Q4_1.gguf", "Q4_1")])
def test_llama_cpp_runner_is_named_after_its_file_precision(file, label):
    from tools.bench.runners.llamacpp import LlamaCppRunner

    runner = LlamaCppRunner(file, ram_cache=True, threads=1)
    assert runner.name == f"llama.cpp-{label}-ramcache" and f"{label} GGUF" in runner.description


SETTINGS = {"gguf_q4": "m.Q4_1.gguf", "trellis_options": {"kv_memory": "1MiB"}}


@pytest.mark.parametrize("name,dtype", [("trellis-f32", "float32"), ("trellis-bf16", "bfloat16")])
def test_a_pinned_dtype_system_runs_float_weights_of_that_dtype(name, dtype):
    runner = systems.build(name, SETTINGS)
    assert runner.options == {"kv_memory": "1MiB", "dtype": dtype, "weight_format": "float"}


def test_the_default_system_takes_the_engine_s_weight_format():
    assert "weight_format" not in systems.build("trellis", SETTINGS).options
