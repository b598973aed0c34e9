"""GGUF files (llama.cpp) -> (ModelConfig, params). The `gguf` package is imported lazily.

Contract: `load_gguf_weights(path, dtype, weight_format="float")` reads metadata into a ModelConfig,
dequantizes every tensor that `gguf.quants` supports (Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, K-quants, F16/BF16/F32,
...) to float32 then to the compute dtype (with weight_format="packed", the layers' linear weights in
Q8_0/Q4_0/Q4_1/Q4_K/Q5_K/Q6_K instead stay packed as the matmul op's `quantized` layout, losslessly; a
matrix whose layers mix formats, as in Q4_K_M files, as a `LayerMix` of them), and undoes llama.cpp's Q/K row permutation: for the "llama" architecture the
converter interleaves the two RoPE halves of every head so llama.cpp can rotate adjacent pairs; our RoPE
rotates halves (as Hugging Face does), so without the inverse the model loads and talks garbage.
Every failure raises CheckpointError naming the file: unreadable/truncated file, unknown architecture,
unsupported quant type, missing tensor, wrong shape.
"""

from __future__ import annotations

import mmap
import re

import numpy as np

from trellis_jax.checkpoints.errors import CheckpointError
from trellis_jax.checkpoints.layout import assemble_params

GGUF_TO_HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
GGUF_LAYER_TO_HF = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_LAYER_NAME = re.compile(r"blk\.(\d+)\.(.+)")


def open_gguf(path):
    """A gguf.GGUFReader, or CheckpointError when the file is missing, not GGUF, or truncated."""
    try:
        import gguf
    except ImportError as exc:
        raise CheckpointError(path, "reading GGUF needs the `gguf` package: pip install gguf") from exc
    try:
        reader = gguf.GGUFReader(str(path))
    except FileNotFoundError as exc:
        raise CheckpointError(path, "file not found") from exc
    except Exception as exc:  # the reader raises ValueError/IndexError/struct errors on bad bytes
        raise CheckpointError(path, f"not a readable GGUF file (truncated or corrupt?): {exc}") from exc
    _check_tensor_extents(reader, path)
    return reader


def _check_tensor_extents(reader, path):
    # A truncated file can still parse its header; its tensor views then come out short.
    for tensor in reader.tensors:
        if tensor.data.nbytes != tensor.n_bytes:
            raise CheckpointError(
                path, f"truncated file: tensor {tensor.name!r} has {tensor.data.nbytes} of {tensor.n_bytes} bytes"
            )


def scalar_metadata(reader) -> dict:
    """Metadata key -> value for every non-array field (arrays such as the vocabulary are skipped)."""
    import gguf

    meta = {}
    for key, field in reader.fields.items():
        if field.types and field.types[0] != gguf.GGUFValueType.ARRAY:
            meta[key] = field.contents()
    return meta


def load_gguf_weights(
    path, dtype: str = "float32", *, reader=None, weight_format: str = "float", require_packed=None, host=False
):
    """-> (ModelConfig, params) from a GGUF file; `reader` reuses an `open_gguf(path)` result;
    `weight_format`: "float" or "packed" (see the module docstring); `require_packed` (default: whether
    weight_format is "packed"): a CheckpointError when no layer weight is in a packed format; `host`: float
    weights stay host numpy arrays (layout.assemble_params)."""
    from trellis_jax.model import ModelConfig, quantized

    if weight_format not in ("float", "packed"):
        raise ValueError(f"weight_format must be 'float' or 'packed', got {weight_format!r}")

    reader = reader or open_gguf(path)
    tensors = {t.name: t for t in reader.tensors}
    meta = scalar_metadata(reader)
    freq_factors = tensors.get("rope_freqs.weight")
    try:
        config = ModelConfig.from_gguf_metadata(
            meta,
            tied="output.weight" not in tensors,
            dtype=dtype,
            rope_freq_factors=None if freq_factors is None else tuple(_dequantize(freq_factors, path).ravel()),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(path, f"bad model metadata: {exc}") from exc
    by_hf_name = {_hf_name(name): t for name, t in tensors.items()}
    permute = meta["general.architecture"] == "llama"

    def fetch(hf_name):
        tensor = by_hf_name.get(hf_name)
        if tensor is None:
            return None
        keep = weight_format == "packed" and tensor.tensor_type.name in quantized.FORMATS
        if keep and (hf_name.endswith("_proj.weight") or hf_name in ("model.embed_tokens.weight", "lm_head.weight")):
            rows, cols = (int(d) for d in reversed(tensor.shape))
            array = quantized.from_gguf(tensor.data, tensor.tensor_type.name, rows, cols)
        else:
            array = _dequantize(tensor, path)
        release_file_pages(reader, tensor)
        if permute and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config.num_heads if "q_proj" in hf_name else config.num_kv_heads
            array = _map_rows(array, lambda rows: unpermute_rope_rows(rows, heads))
        return array

    gguf_name_of = {hf: g for g, hf in _expected_gguf_names(config.num_layers)}
    params = assemble_params(fetch, config, str(path), lambda hf: gguf_name_of.get(hf, hf), host=host)
    require_packed = weight_format == "packed" if require_packed is None else require_packed
    if require_packed and not any(quantized.is_quantized(w) for w in params["layers"].values()):
        kinds = sorted({t.tensor_type.name for t in reader.tensors})
        raise CheckpointError(
            path, f"weight_format='packed': no layer weights in {quantized.FORMATS} (file has {kinds})"
        )
    return config, params


def release_file_pages(reader, tensor) -> None:
    """Drop the file pages `tensor`'s bytes were read through from this process's memory, once they have
    been copied out. They are clean pages of a read-only mapping, so the kernel reloads them if they are
    read again; without this, a load's resident set is the weights kept plus the whole file (an 8B file:
    4.9 GB more). A reader without an mmap (none in the gguf versions supported) keeps its pages."""
    mapping = getattr(reader.data, "_mmap", None)
    if mapping is None or not hasattr(mapping, "madvise"):
        return
    page = mmap.PAGESIZE
    start = int(tensor.data_offset) // page * page
    end = min(len(mapping), int(tensor.data_offset) + int(tensor.n_bytes))
    mapping.madvise(mmap.MADV_DONTNEED, start, end - start)


def _expected_gguf_names(num_layers: int):
    """(GGUF name, HF name) of every tensor a model may need, so errors can name absent ones in GGUF terms."""
    pairs = [(g, hf) for g, hf in GGUF_TO_HF.items()]
    for i in range(num_layers):
        pairs += [(f"blk.{i}.{g}", f"model.layers.{i}.{hf}") for g, hf in GGUF_LAYER_TO_HF.items()]
    return pairs


def _hf_name(gguf_name: str) -> str:
    match = _LAYER_NAME.fullmatch(gguf_name)
    if match and match.group(2) in GGUF_LAYER_TO_HF:
        return f"model.layers.{match.group(1)}.{GGUF_LAYER_TO_HF[match.group(2)]}"
    return GGUF_TO_HF.get(gguf_name, gguf_name)


def _dequantize(tensor, path) -> np.ndarray:
    """float32 array in torch layout ([out, in]: GGUF lists dims innermost first)."""
    from gguf import quants

    try:
        array = quants.dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError as exc:
        raise CheckpointError(
            path, f"tensor {tensor.name!r}: unsupported quant type {tensor.tensor_type.name}"
        ) from exc
    shape = tuple(int(d) for d in reversed(tensor.shape))
    return np.asarray(array, np.float32).reshape(shape)


def _map_rows(array, fn):
    """fn applied to a float [out, in] array, or to each part of a packed weight (rows = its outputs)."""
    from trellis_jax.model import quantized

    return quantized.permute_rows(array, fn) if quantized.is_quantized(array) else fn(array)


def unpermute_rope_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Inverse of llama.cpp's convert permute: rows (head, pair, 2) -> (head, 2, pair) per head."""
    out_dim = weight.shape[0]
    head_dim = out_dim // num_heads
    return weight.reshape(num_heads, head_dim // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
