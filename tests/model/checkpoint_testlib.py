"""Write small GGUF files from the tiny HF fixtures, the way llama.cpp's converter lays them out."""

import json

import numpy as np

from trellis_jax.model import ModelConfig
from trellis_jax.model.rope import inverse_frequencies

HF_TO_GGUF_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def hf_tensors(hf_dir) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(hf_dir / "model.safetensors"))


def llama_cpp_permute(weight, num_heads):
    """convert_hf_to_gguf.py's permute: interleave the two RoPE halves of every head."""
    return (
        weight.reshape(num_heads, 2, weight.shape[0] // num_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def gguf_name(hf_name):
    if hf_name.startswith("model.layers."):
        _, _, index, rest = hf_name.split(".", 3)
        return f"blk.{index}.{HF_TO_GGUF_LAYER[rest]}"
    return HF_TO_GGUF[hf_name]


def write_tiny_gguf(path, hf_dir, qtype_name="F32", *, drop=(), reshape=None, metadata=None, arch=None, as_int32=()):
    """GGUF of the tiny HF checkpoint at hf_dir; 2-D weights stored as `qtype_name`, norms/biases F32.
    `drop`: HF names to leave out; `reshape`: {hf name: new shape}; `metadata`: overrides; `arch`:
    general.architecture to write; `as_int32`: HF names stored as I32 (not a dequantizable type)."""
    import gguf
    from gguf import quants

    hf_config = json.loads((hf_dir / "config.json").read_text())
    config = ModelConfig.from_hf_config(hf_config)
    arch = arch or ("qwen2" if config.architecture == "qwen2" else "llama")
    writer = gguf.GGUFWriter(str(path), arch)
    meta = {
        f"{arch}.block_count": config.num_layers,
        f"{arch}.context_length": config.max_position_embeddings,
        f"{arch}.embedding_length": config.hidden_size,
        f"{arch}.feed_forward_length": config.intermediate_size,
        f"{arch}.attention.head_count": config.num_heads,
        f"{arch}.attention.head_count_kv": config.num_kv_heads,
        f"{arch}.rope.freq_base": config.rope_theta,
        f"{arch}.attention.layer_norm_rms_epsilon": config.rms_norm_eps,
        f"{arch}.vocab_size": config.vocab_size,
    }
    if config.sliding_window:
        meta[f"{arch}.attention.sliding_window"] = config.sliding_window
    meta.update(metadata or {})
    for key, value in meta.items():
        (
            writer.add_string
            if isinstance(value, str)
            else writer.add_float32
            if isinstance(value, float)
            else writer.add_uint32
        )(key, value)
    qtype = gguf.GGMLQuantizationType[qtype_name]
    for name, tensor in hf_tensors(hf_dir).items():
        if name in drop:
            continue
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            tensor = llama_cpp_permute(tensor, config.num_heads if "q_proj" in name else config.num_kv_heads)
        if reshape and name in reshape:
            tensor = tensor.reshape(reshape[name])
        if name in as_int32:
            writer.add_tensor(gguf_name(name), tensor.astype(np.int32))
        elif tensor.ndim == 2 and qtype_name != "F32":
            writer.add_tensor(gguf_name(name), quants.quantize(tensor, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(gguf_name(name), np.ascontiguousarray(tensor, np.float32))
    if config.rope_scaling is not None:  # llama.cpp stores Llama-3 scaling as per-frequency divisors
        plain = inverse_frequencies(config.head_dim, config.rope_theta, None)
        scaled = inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
        writer.add_tensor("rope_freqs.weight", (plain / scaled).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
