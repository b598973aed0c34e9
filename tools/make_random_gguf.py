"""Write a random-weight llama GGUF of a named shape in a llama.cpp-like K-quant mix (never a download).

    PYTHONPATH=. python tools/make_random_gguf.py --shape llama-3-8b --out /tmp/llama-3-8b-q4_k_m.gguf

Contract: `write(path, shape, mix="Q4_K_M", seed=0)` writes a GGUF that `trellis_jax.checkpoints.load_model`
loads (weights, config and tokenizer) and returns {tensor name: GGML type name}. The weights are random
K-quant blocks (`trellis_testing.kquant_blocks`: every byte random but each super-block's float16 d / dmin,
finite and small, so activations stay finite). `mix`:
  Q4_K_M: llama.cpp's choice for that file type: attn_v and ffn_down in Q6_K on its "more bits" layers
          (`more_bits`), Q4_K elsewhere; the output head Q6_K, the token embedding Q4_K; norms F32.
  Q4_K, Q5_K, Q6_K: every matrix in that one format.
The tokenizer is a byte-level BPE ("gpt2", pre-tokenizer llama-bpe) of the shape's vocabulary size: the 256
byte symbols, then filler tokens, a handful of merges; BOS and EOS are the last two ids. Tensors are
streamed to the file one at a time, so writing an 8B file holds one tensor in memory, not the model.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import gguf
import numpy as np

from trellis_testing.kquant_blocks import random_k_quant


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    context: int = 8192
    rope_theta: float = 500000.0


SHAPES = {
    "llama-3-8b": Shape(hidden=4096, layers=32, heads=32, kv_heads=8, ffn=14336, vocab=128256),
    # the same code at a size tests can load: 8 layers so the "more bits" pattern has both kinds
    "tiny": Shape(hidden=256, layers=8, heads=4, kv_heads=2, ffn=512, vocab=384, context=256),
}
MIXES = ("Q4_K_M", "Q4_K", "Q5_K", "Q6_K")
# Element magnitude ~ d * sc * q: Q6_K's 8-bit scales and 6-bit codes need a smaller d for the same size.
_SCALE = {"Q4_K": 1e-4, "Q5_K": 5e-5, "Q6_K": 3e-5}


def more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third between."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def matrices(shape: Shape) -> dict[str, tuple[int, int]]:
    """A layer's matrix name -> (rows = outputs, cols = inputs), as GGUF stores them."""
    head_dim = shape.hidden // shape.heads
    return {
        "attn_q.weight": (shape.heads * head_dim, shape.hidden),
        "attn_k.weight": (shape.kv_heads * head_dim, shape.hidden),
        "attn_v.weight": (shape.kv_heads * head_dim, shape.hidden),
        "attn_output.weight": (shape.hidden, shape.heads * head_dim),
        "ffn_gate.weight": (shape.ffn, shape.hidden),
        "ffn_up.weight": (shape.ffn, shape.hidden),
        "ffn_down.weight": (shape.hidden, shape.ffn),
    }


def format_of(mix: str, name: str, layer: int | None, layers: int) -> str:
    """The GGML type of matrix `name` in `layer` (None: token_embd / output) under `mix`."""
    if mix != "Q4_K_M":
        return mix
    if name == "output":
        return "Q6_K"
    if name in ("attn_v.weight", "ffn_down.weight") and layer is not None and more_bits(layer, layers):
        return "Q6_K"
    return "Q4_K"


def _plan(shape: Shape, mix: str) -> list[tuple[str, str, tuple[int, int]]]:
    """(name, GGML type, [rows, cols]) of every tensor, in file order; norms are "F32" with rows 1."""
    plan = [
        ("token_embd.weight", format_of(mix, "token_embd", None, shape.layers), (shape.vocab, shape.hidden)),
        ("output.weight", format_of(mix, "output", None, shape.layers), (shape.vocab, shape.hidden)),
        ("output_norm.weight", "F32", (1, shape.hidden)),
    ]
    for i in range(shape.layers):
        for name, dims in matrices(shape).items():
            plan.append((f"blk.{i}.{name}", format_of(mix, name, i, shape.layers), dims))
        plan += [(f"blk.{i}.{norm}", "F32", (1, shape.hidden)) for norm in ("attn_norm.weight", "ffn_norm.weight")]
    return plan


def _tokens(vocab: int) -> tuple[list[str], list[str]]:
    """Byte-level BPE tokens (the 256 byte symbols first, then unique filler strings of them) and merges."""
    symbols = [chr(c) for c in range(ord("!"), ord("~") + 1)] + [chr(c) for c in range(0xA1, 0xAD)]
    symbols += [chr(c) for c in range(0xAE, 0x100)]
    symbols += [chr(0x100 + i) for i in range(256 - len(symbols))]  # GPT-2's stand-ins for the other bytes
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    filler = []
    for i in range(vocab - 256 - 2):
        word, n = "", i
        while True:
            word, n = letters[n % 26] + word, n // 26 - 1
            if n < 0:
                break
        filler.append("Ġ" + word)
    merges = ["Ġ a", "Ġ b", "Ġ c"]
    return symbols + filler + ["<|begin_of_text|>", "<|end_of_text|>"], merges


def _add_metadata(writer, shape: Shape) -> None:
    for key, value in {
        "block_count": shape.layers,
        "context_length": shape.context,
        "embedding_length": shape.hidden,
        "feed_forward_length": shape.ffn,
        "attention.head_count": shape.heads,
        "attention.head_count_kv": shape.kv_heads,
        "vocab_size": shape.vocab,
    }.items():
        writer.add_uint32(f"llama.{key}", value)
    writer.add_float32("llama.rope.freq_base", shape.rope_theta)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    tokens, merges = _tokens(shape.vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.NORMAL] * (len(tokens) - 2) + [gguf.TokenType.CONTROL] * 2)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(shape.vocab - 2)
    writer.add_eos_token_id(shape.vocab - 1)


def _tensor(kind: str, rows: int, cols: int, rng) -> np.ndarray:
    if kind == "F32":
        return (1 + 0.1 * rng.standard_normal(cols)).astype(np.float32)
    return random_k_quant(kind, rows, cols, rng, scale=_SCALE[kind]).reshape(rows, -1)


def write(path, shape: Shape, mix: str = "Q4_K_M", seed: int = 0) -> dict[str, str]:
    """Write the GGUF (see the module docstring); -> {tensor name: GGML type name}."""
    if mix not in MIXES:
        raise ValueError(f"unknown mix {mix!r}; use one of {MIXES}")
    plan = _plan(shape, mix)
    writer = gguf.GGUFWriter(str(path), "llama")
    _add_metadata(writer, shape)
    for name, kind, (rows, cols) in plan:
        if kind == "F32":
            writer.add_tensor_info(name, (cols,), np.dtype(np.float32), cols * 4)
        else:
            nbytes = rows * cols // 256 * gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]][1]
            raw_shape = (rows, nbytes // rows)
            writer.add_tensor_info(name, raw_shape, np.dtype(np.uint8), nbytes, gguf.GGMLQuantizationType[kind])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for _, kind, (rows, cols) in plan:  # one tensor in memory at a time
        writer.write_tensor_data(_tensor(kind, rows, cols, rng))
    writer.close()
    return {name: kind for name, kind, _ in plan}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-3-8b")
    parser.add_argument("--mix", choices=MIXES, default="Q4_K_M")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    kinds = write(args.out, SHAPES[args.shape], args.mix, args.seed)
    counts = {kind: sum(k == kind for k in kinds.values()) for kind in sorted(set(kinds.values()))}
    print(f"wrote {args.out}: {len(kinds)} tensors {counts}")


if __name__ == "__main__":
    main()
