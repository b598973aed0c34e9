"""One prepared-model entry on disk: a LoadedModel's params, config and tokenizer, mapped back without parsing.

Contract: an entry is a directory holding two files:
  index.json    {"format", "config": ModelConfig fields, "tokenizer": its record or null, "source",
                 "tree": the params tree's structure, "leaves": [{"offset", "dtype", "shape", "crc32"}]}
  weights.bin   every leaf's bytes, each at a 64-byte aligned offset
  write_entry(directory, loaded)  writes both files into `directory` (which must not exist yet).
  read_entry(directory) -> LoadedModel   maps weights.bin, checks each leaf's size and CRC-32, and puts the
      leaves on the default device; raises DamagedEntry (what is wrong, naming the file) for a missing,
      truncated, garbled or foreign entry. Never returns a partly read model.
The tree may hold dicts, arrays (numpy or jax) and the matmul op's QuantizedWeight and LayerMix; anything else is a
TypeError at write time (so a new kind of leaf is noticed, never silently dropped).
Why CRC-32 of every leaf on every read: a flipped byte in a weight would not fail anything, it would make the
model talk differently; zlib's CRC-32 reads ~2 GB/s here, so checking costs less than copying the weights.
"""

from __future__ import annotations

import json
import os
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from trellis_jax.checkpoints.loaded import LoadedModel
from trellis_jax.checkpoints.orbax_io import _config_from_dict, _config_to_dict
from trellis_jax.model import quantized

FORMAT = "trellis-prepared-v1"
INDEX = "index.json"
WEIGHTS = "weights.bin"
_ALIGN = 64  # XLA's CPU client aligns buffers to 64 bytes; aligned views copy at full speed


class DamagedEntry(RuntimeError):
    """A cached entry that must not be used; the message says what is wrong."""


def write_entry(directory: str, loaded: LoadedModel) -> None:
    leaves: list[np.ndarray] = []
    tree = _encode(loaded.params, leaves)
    os.makedirs(directory)
    records, offset = [], 0
    with open(os.path.join(directory, WEIGHTS), "wb") as f:
        for leaf in leaves:
            offset = -(-offset // _ALIGN) * _ALIGN
            f.seek(offset)
            data = np.ascontiguousarray(leaf)
            f.write(data.tobytes())
            records.append(
                {
                    "offset": offset,
                    "dtype": data.dtype.name,
                    "shape": list(data.shape),
                    "crc32": zlib.crc32(data),
                }
            )
            offset += data.nbytes
    index = {
        "format": FORMAT,
        "config": _config_to_dict(loaded.config),
        "tokenizer": _tokenizer_record(loaded.tokenizer),
        "source": loaded.source,
        "tree": tree,
        "leaves": records,
    }
    with open(os.path.join(directory, INDEX), "w", encoding="utf-8") as f:
        json.dump(index, f)


def read_entry(directory: str) -> LoadedModel:
    index_path, weights_path = os.path.join(directory, INDEX), os.path.join(directory, WEIGHTS)
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            raise DamagedEntry(f"{index_path}: not a {FORMAT} index")
        blob = np.memmap(weights_path, np.uint8, mode="r") if os.path.getsize(weights_path) else np.zeros(0, np.uint8)
        leaves = [_leaf(blob, record, weights_path) for record in index["leaves"]]
        params = _decode(index["tree"], leaves)
        config = _config_from_dict(index["config"], index_path)
        tokenizer = _tokenizer_from_record(index["tokenizer"])
        return LoadedModel(config, params, tokenizer, index["source"])
    except DamagedEntry:
        raise
    except Exception as error:  # a garbled index: bad JSON, missing keys, wrong types; a missing file
        raise DamagedEntry(f"{directory}: unreadable entry ({type(error).__name__}: {error})") from error


def _leaf(blob: np.ndarray, record: dict, path: str) -> np.ndarray:
    dtype = jnp.dtype(record["dtype"])  # jnp knows bfloat16 too
    shape = tuple(int(d) for d in record["shape"])
    start = int(record["offset"])
    end = start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if end > blob.size:
        raise DamagedEntry(f"{path}: truncated ({blob.size} bytes, a leaf ends at {end})")
    data = blob[start:end]
    if zlib.crc32(data) != record["crc32"]:
        raise DamagedEntry(f"{path}: bytes {start}..{end} fail their CRC-32 (garbled)")
    return jax.device_put(data.view(dtype).reshape(shape))  # a copy; jnp.asarray would compile a convert per leaf


def _encode(node, leaves: list) -> object:
    """The tree's structure as JSON; arrays are appended to `leaves` and referenced by position."""
    if isinstance(node, dict):
        return {"dict": {str(key): _encode(value, leaves) for key, value in node.items()}}
    if quantized.is_layer_mix(node):
        return {"layer_mix": list(node.which), "parts": [_encode(part, leaves) for part in node.parts]}
    if quantized.is_quantized(node):
        return {
            "quantized": node.fmt,
            "parts": [_encode(part, leaves) for part in (node.codes, node.scales, node.mins)],
        }
    if node is None:
        return None
    if isinstance(node, np.ndarray) or hasattr(node, "__array__") and hasattr(node, "dtype"):
        leaves.append(np.asarray(node))
        return {"leaf": len(leaves) - 1}
    raise TypeError(f"cannot cache a params leaf of type {type(node).__name__}")


def _decode(node, leaves: list) -> object:
    if node is None:
        return None
    if "dict" in node:
        return {key: _decode(value, leaves) for key, value in node["dict"].items()}
    if "layer_mix" in node:
        return quantized.LayerMix(tuple(_decode(part, leaves) for part in node["parts"]), tuple(node["layer_mix"]))
    if "quantized" in node:
        codes, scales, mins = (_decode(part, leaves) for part in node["parts"])
        return quantized.QuantizedWeight(codes, scales, mins, node["quantized"])
    return leaves[node["leaf"]]


def _tokenizer_record(tokenizer) -> dict | None:
    if tokenizer is None:
        return None
    return {
        "json": tokenizer.hf_tokenizer.to_str(),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "eos_token_ids": list(tokenizer.eos_token_ids),  # rebuilt as the extras: the same ids, same order
        "unk_token_id": tokenizer.unk_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "add_bos": tokenizer.add_bos,
        "chat_template": None if tokenizer.chat_template is None else tokenizer.chat_template.source,
        "source": tokenizer.source,
    }


def _tokenizer_from_record(record: dict | None):
    if record is None:
        return None
    from tokenizers import Tokenizer as HFTokenizer

    from trellis_jax.tokenizer import Tokenizer

    return Tokenizer(
        HFTokenizer.from_str(record["json"]),
        bos_token_id=record["bos_token_id"],
        eos_token_id=record["eos_token_id"],
        extra_eos_ids=record["eos_token_ids"],
        unk_token_id=record["unk_token_id"],
        pad_token_id=record["pad_token_id"],
        add_bos=record["add_bos"],
        chat_template=record["chat_template"],
        source=record["source"],
    )
