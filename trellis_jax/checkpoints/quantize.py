"""`--quantization int8|int4`: a float checkpoint's matrices quantized at load, per group of 32 along K, into
the matmul op's packed layout (pallas_kernels/matmul/quantize.py has the rounding and its error bound).

Contract:
  `quantize_params(params, config, scheme, *, head_scheme="int8") -> params`: a new tree (the input is left
  as it is) whose layer matrices (wq, wk, wv, wo, w_gate, w_up, w_down) are packed in the scheme's format,
  int8 -> Q8_0 and int4 -> Q4_1, and whose embedding and separate LM head are packed per head_scheme: int8
  (Q8_0) by default for either scheme, as llama.cpp keeps its 4-bit files' output matrix at 6 or 8 bits
  (docs/benchmarks/quantized.md, "Quantizing a float checkpoint", measures both). The embedding is stored
  as the packed path keeps a GGUF one: its tied head's [H, V] weight. Norms and biases stay float.
  "none": params unchanged. A matrix whose input size is not a multiple of 32 is a ValueError naming it
  (nothing is left float behind the flag's back).
  `quantize_loaded(loaded, scheme, *, head_scheme="int8") -> LoadedModel`: the same on a loaded model.
  `refuse_quantized_gguf(reader, path)`: a CheckpointError when a GGUF file's matrices are quantized
  already (quantizing dequantized 4-bit weights again only adds error; --weight-format packed runs the
  file as it is).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from trellis_jax.checkpoints.errors import CheckpointError
from trellis_jax.dtypes import NO_QUANTIZATION, check_quantization
from trellis_jax.model import quantize as quantizer
from trellis_jax.model import quantized

MATRICES = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
HEAD_SCHEME = "int8"  # the embedding / LM head, whatever the layers' scheme
FLOAT_GGUF_TYPES = ("F32", "F16", "BF16", "F64")


def refuse_quantized_gguf(reader, path) -> None:
    kinds = sorted({t.tensor_type.name for t in reader.tensors} - set(FLOAT_GGUF_TYPES))
    if kinds:
        raise CheckpointError(
            path,
            f"--quantization needs a float checkpoint, but this GGUF is quantized already ({', '.join(kinds)}): "
            "run it as it is (--weight-format packed or auto) instead of quantizing its dequantized weights again",
        )


def quantize_params(params: dict, config, scheme: str, *, head_scheme: str = HEAD_SCHEME) -> dict:
    """params with its matrices packed per `scheme` (the embedding and LM head per `head_scheme`); see the
    module docstring."""
    check_quantization(scheme)
    if scheme == NO_QUANTIZATION:
        return params
    layers = dict(params["layers"])
    for name in MATRICES:
        layers[name] = _stacked(layers[name], scheme, name)
    out = {**params, "layers": layers}
    out["embed"] = _single(np.asarray(params["embed"]).T, head_scheme, "embed")  # as its tied head [H, V]
    if "lm_head" in params:
        out["lm_head"] = _single(params["lm_head"], head_scheme, "lm_head")
    return out


def quantize_loaded(loaded, scheme: str, *, head_scheme: str = HEAD_SCHEME):
    if scheme == NO_QUANTIZATION:
        return loaded
    params = quantize_params(loaded.params, loaded.config, scheme, head_scheme=head_scheme)
    return dataclasses.replace(loaded, params=params)


def _stacked(w, scheme, name):
    # One layer at a time: the quantizer's float32 temporaries stay a layer's size.
    return quantized.stack([_quantize(np.asarray(w[i]), scheme, name) for i in range(w.shape[0])])


def _single(w, scheme, name):
    return quantized.to_device(_quantize(np.asarray(w), scheme, name))


def _quantize(w, scheme, name):
    try:
        return quantizer.quantize(w.astype(np.float32, copy=False), scheme)
    except ValueError as error:
        raise ValueError(f"--quantization {scheme}: cannot quantize {name} {tuple(w.shape)}: {error}") from None
