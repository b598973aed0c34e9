"""load_model: one entry point for every checkpoint kind (docs/CONTRACTS.md, "Checkpoints").

`spec` is a GGUF file, a Hugging Face directory, an orbax directory written by `save_orbax`, a preset
name from `trellis_jax/configs/`, or None for the default model. Weights come back in `dtype`: "float32",
"bfloat16", or "auto" (the preset's dtype if it names one, else `trellis_jax.dtypes.resolve_dtype`'s choice for
this machine); None means the preset's, else float32, or the saved dtype for an orbax directory. The
`weight_format` (trellis_jax.dtypes.WEIGHT_FORMATS): "float" dequantizes
every GGUF tensor at load; "packed" keeps the layers' Q8_0/Q4_0/Q4_1 linear weights packed (the matmul op
multiplies them as they are); "auto" is the measured choice for a GGUF file (trellis_jax.dtypes: packed where the file has such weights), float for a directory. The tokenizer is the one the checkpoint carries (None for a directory without tokenizer files).
`quantization` (trellis_jax.dtypes.QUANTIZATIONS): "int8" / "int4" load a float checkpoint (HF, orbax, or a
float GGUF: a quantized one is refused) and quantize its matrices (checkpoints/quantize.py); not with
weight_format="packed".
`prepared_cache_dir`: a GGUF file's loaded model is kept there and mapped back on the next load
(prepared_cache.py: what invalidates an entry, what happens to a damaged one); None: no cache (nor with
`quantization`: the float GGUF is read afresh, so a quantized one is always refused; nor with
`tensor_parallel_size` > 1: the cache maps weights back onto one device).
`tensor_parallel_size` N > 1: nothing is placed whole on a device. GGUF and Hugging Face float weights come
back as host numpy arrays (the runner slices each shard on the host and puts it on its own device); an
orbax directory is restored with a NamedSharding over the first N devices, split per model/logical_axes.py
(orbax_io.load_orbax).
"""

from __future__ import annotations

import os

from trellis_jax.checkpoints.default_model import default_gguf_path
from trellis_jax.checkpoints.errors import CheckpointError
from trellis_jax.checkpoints.loaded import LoadedModel
from trellis_jax.checkpoints.prepared_cache import load_or_build
from trellis_jax.checkpoints.presets import resolve_preset
from trellis_jax.dtypes import AUTO, NO_QUANTIZATION, check_quantization, resolve_dtype, resolve_weight_format

GGUF_MAGIC = b"GGUF"
HF_TOKENIZER_FILE = "tokenizer.json"


def load_model(
    spec: str | os.PathLike | None = None,
    *,
    dtype: str | None = None,
    weight_format: str = "float",
    quantization: str = NO_QUANTIZATION,
    prepared_cache_dir: str | None = None,
    tensor_parallel_size: int = 1,
) -> LoadedModel:
    """Load weights, config and tokenizer (see the module docstring for the arguments)."""
    if quantization != NO_QUANTIZATION:  # load float, then quantize ("float" is this function's default)
        check_quantization(quantization, AUTO if weight_format == "float" else weight_format)
        weight_format = "float"
        prepared_cache_dir = None  # the cache would skip the GGUF read that refuses an already quantized file
    if spec is not None and not os.path.exists(spec):
        spec, preset_dtype = resolve_preset(str(spec))
        dtype = preset_dtype if dtype in (None, AUTO) and preset_dtype else dtype
    if dtype is not None:
        dtype = resolve_dtype(dtype)
    path = default_gguf_path() if spec is None else os.fspath(spec)
    require_packed = weight_format == "packed"  # asked for by name: a file with nothing to pack is an error
    weight_format = resolve_weight_format(weight_format, gguf=not os.path.isdir(path))
    if os.path.isdir(path):
        if weight_format == "packed":
            raise CheckpointError(path, "weight_format='packed' needs a GGUF file in Q8_0/Q4_0/Q4_1, not a directory")
        loaded = _load_directory(path, dtype, tensor_parallel_size)
    else:
        dtype = dtype or "float32"
        loaded = load_or_build(
            path,
            dtype,
            weight_format,
            require_packed,
            None if tensor_parallel_size > 1 else prepared_cache_dir,  # the cache puts whole weights on device 0
            lambda: _load_gguf(path, dtype, weight_format, require_packed, quantization, tensor_parallel_size),
        )
    if quantization == NO_QUANTIZATION:
        return loaded
    from trellis_jax.checkpoints.quantize import quantize_loaded

    return quantize_loaded(loaded, quantization)


def _load_gguf(
    path: str,
    dtype: str,
    weight_format: str,
    require_packed: bool,
    quantization: str = NO_QUANTIZATION,
    tensor_parallel_size: int = 1,
) -> LoadedModel:
    from trellis_jax.checkpoints.gguf_loader import load_gguf_weights, open_gguf
    from trellis_jax.tokenizer import Tokenizer

    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise CheckpointError(path, "not a GGUF file (bad magic); expected a .gguf file or a model directory")
    reader = open_gguf(path)  # parsing the header and vocabulary is slow: share it with the tokenizer
    if quantization != NO_QUANTIZATION:
        from trellis_jax.checkpoints.quantize import refuse_quantized_gguf

        refuse_quantized_gguf(reader, path)
    config, params = load_gguf_weights(
        path,
        dtype,
        reader=reader,
        weight_format=weight_format,
        require_packed=require_packed,
        host=tensor_parallel_size > 1,
    )
    return LoadedModel(config, params, Tokenizer.from_gguf(path, reader=reader), os.path.abspath(path))


def _load_directory(path: str, dtype: str | None, tensor_parallel_size: int = 1) -> LoadedModel:
    from trellis_jax.checkpoints.hf_loader import load_hf_weights
    from trellis_jax.checkpoints.orbax_io import is_orbax_dir, load_orbax

    if is_orbax_dir(path):
        return load_orbax(path, dtype, tensor_parallel_size=tensor_parallel_size)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise CheckpointError(
            path, "not a model directory: no config.json (Hugging Face) and no trellis_model.json (orbax checkpoint)"
        )
    config, params = load_hf_weights(path, dtype or "float32", host=tensor_parallel_size > 1)
    tokenizer = None
    if os.path.isfile(os.path.join(path, HF_TOKENIZER_FILE)):
        from trellis_jax.tokenizer import Tokenizer

        tokenizer = Tokenizer.from_hf_dir(path)
    return LoadedModel(config, params, tokenizer, os.path.abspath(path))
