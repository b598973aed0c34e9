"""A Llama-3.2-1B-shaped model with random weights, as a Hugging Face directory (GPU mode).

`write_random_llama(out_dir, seed=0)` writes config.json + model.safetensors (bf16, seeded torch init)
and a word-level tokenizer.json whose vocabulary holds the benchmark's filler words, so workload text
tokenizes to meaningful ids; every other id is an `<unused_i>` token. Needs only torch, transformers and
tokenizers (no gguf, nothing downloaded). Both Trellis (`load_model(dir, dtype="bfloat16")`) and
transformers (`from_pretrained(dir)`) read the same files, so they run the same weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from .text import _WORDS

LLAMA_32_1B = dict(
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    vocab_size=128256,
    max_position_embeddings=8192,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
    rope_scaling={
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
)
SPECIAL = ["<unk>", "<|im_start|>", "<|im_end|>"]


def write_random_llama(out_dir: Path, seed: int = 0, shape: dict | None = None, device: str = "cuda") -> Path:
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and (out_dir / "model.safetensors").is_file():
        return out_dir
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(**(shape or LLAMA_32_1B), architectures=["LlamaForCausalLM"])
    torch.manual_seed(seed)
    with torch.device(device if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out_dir, safe_serialization=True)
    _write_tokenizer(out_dir, config.vocab_size)
    return out_dir


def _write_tokenizer(out_dir: Path, vocab_size: int) -> None:
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    words = SPECIAL + ["\n", ".", ",", ":"] + sorted({w for w in _WORDS} | {w.capitalize() for w in _WORDS})
    words += ["system", "user", "assistant", "Plan"]
    vocab = {}
    for word in words:
        vocab.setdefault(word, len(vocab))
    for i in range(len(vocab), vocab_size):
        vocab[f"<unused_{i}>"] = i
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    tokenizer.save(str(out_dir / "tokenizer.json"))
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<|im_start|>",
                "eos_token": "<|im_end|>",
                "unk_token": "<unk>",
                "add_bos_token": False,
                "chat_template": template,
            }
        )
    )
