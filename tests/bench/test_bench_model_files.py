"""The benchmark's converted GGUFs: BF16 matrices and F32 vectors written from the same weights."""

import numpy as np
import pytest

from tools.bench.model_files import converted_gguf

gguf = pytest.importorskip("gguf")
MATRIX = np.random.default_rng(0).normal(size=(6, 32)).astype(np.float32)
NORM = np.linspace(0.5, 1.5, 32).astype(np.float32)


def _source(path):
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("general.file_type", int(gguf.LlamaFileType.ALL_F32))
    writer.add_tensor("blk.0.ffn_down.weight", MATRIX)
    writer.add_tensor("blk.0.attn_norm.weight", NORM)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _tensors(path):
    reader = gguf.GGUFReader(str(path))
    return reader, {t.name: t for t in reader.tensors}


def test_bf16_copy_rounds_matrices_and_keeps_vectors(tmp_path):
    import jax.numpy as jnp

    reader, tensors = _tensors(converted_gguf(tmp_path / "out", "BF16", source=_source(tmp_path / "m.gguf")))
    matrix, norm = tensors["blk.0.ffn_down.weight"], tensors["blk.0.attn_norm.weight"]
    assert matrix.tensor_type == gguf.GGMLQuantizationType.BF16 and norm.tensor_type == gguf.GGMLQuantizationType.F32
    expected = np.asarray(jnp.asarray(MATRIX).astype(jnp.bfloat16).astype(jnp.float32))
    np.testing.assert_array_equal(gguf.dequantize(matrix.data, matrix.tensor_type).reshape(MATRIX.shape), expected)
    np.testing.assert_array_equal(np.asarray(norm.data), NORM)
    assert reader.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_BF16)


def test_f32_copy_is_exact_and_reused(tmp_path):
    source = _source(tmp_path / "m.gguf")
    first = converted_gguf(tmp_path / "out", "F32", source=source)
    _, tensors = _tensors(first)
    np.testing.assert_array_equal(np.asarray(tensors["blk.0.ffn_down.weight"].data).reshape(MATRIX.shape), MATRIX)
    stamp = first.stat().st_mtime_ns
    assert converted_gguf(tmp_path / "out", "F32", source=source).stat().st_mtime_ns == stamp


def test_unknown_precision_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown precision 'Q8'"):
        converted_gguf(tmp_path, "Q8")
