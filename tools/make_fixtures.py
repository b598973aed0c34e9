"""Make the reference fixtures under tests/fixtures/ with Hugging Face transformers (the trusted oracle).

Run once, commit the output (small):  .venv/bin/python tools/make_fixtures.py [--only tiny|smollm2|tokenizer]
Needs the dev extra: `pip install torch==2.13.0` (the CPU wheel) then `pip install -e '.[dev]'`.

  tiny_<arch>/                 random Llama (llama3 RoPE scaling, untied), Qwen2 (q/k/v bias, tied, GQA 4)
                               and Mistral (sliding window 6) checkpoints as HF dirs with a tiny BPE tokenizer
  tiny_<arch>_reference.npz    per prompt: token ids, the positions checked, full logits there, greedy ids
  smollm2_reference.npz        the default model loaded by transformers straight from the GGUF (it
                               dequantizes and un-permutes Q/K itself, independently of our loader):
                               per prompt the last position's logits at (top-64 + fixed random) vocab ids
                               and a greedy continuation
  tokenizer_reference.json     transformers' tokenizer from the same GGUF on a varied text set, plus
                               rendered chat templates
Nothing here is imported by the package or the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_texts import CHAT_CASES, SMOLLM2_PROMPTS, TOKENIZER_TEXTS, TOKENIZER_TRAINING_TEXT  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
GREEDY_STEPS = 8
SMOLLM2_GREEDY_STEPS = 16
TINY_VOCAB = 320
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_configs():
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    common = dict(
        vocab_size=TINY_VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        head_dim=16,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        bos_token_id=None,
        eos_token_id=2,
        pad_token_id=None,
    )
    return {
        "llama": LlamaConfig(
            **common,
            num_key_value_heads=2,
            tie_word_embeddings=False,
            rope_scaling={
                "rope_type": "llama3",
                "rope_theta": 10000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        ),
        "qwen2": Qwen2Config(
            **common,
            num_key_value_heads=1,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        "mistral": MistralConfig(**common, num_key_value_heads=2, tie_word_embeddings=False, sliding_window=6),
    }


def train_tiny_tokenizer():
    """A byte-level BPE of TINY_VOCAB ids with ChatML specials (ids 0-2), trained on a fixed text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TOKENIZER_TRAINING_TEXT], trainer)
    assert tok.get_vocab_size() == TINY_VOCAB, tok.get_vocab_size()
    return tok


def randomize(model, seed):
    """Every parameter random (norm weights around 1, biases non-zero) so a mapping bug shows in logits."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1.0 + 0.2 * noise if "norm" in name else 0.15 * noise)


def torch_greedy(model, ids, steps):
    import torch

    out = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([out])).logits[0, -1]
            out.append(int(logits.argmax()))
    return out[len(ids) :]


def top2_gap(logits):
    top = np.sort(logits)[-2:]
    return float(top[1] - top[0])


def make_tiny(name, config, tokenizer, seed):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    randomize(model, seed)
    directory = os.path.join(FIXTURES, f"tiny_{name}")
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": None, "eos_token": "<|im_end|>", "add_bos_token": False, "chat_template": CHATML}, f)
    rng = np.random.default_rng(seed)
    arrays, min_gap = {}, np.inf
    for i, length in enumerate((5, 13, 22, 37)):  # > page sizes and > the Mistral window
        ids = rng.integers(3, TINY_VOCAB, length).tolist()
        positions = sorted({length // 3, (2 * length) // 3, length - 1})
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].numpy()
        greedy = torch_greedy(model, ids, GREEDY_STEPS)
        arrays.update(
            {
                f"prompt_{i}": np.array(ids, np.int32),
                f"positions_{i}": np.array(positions, np.int32),
                f"logits_{i}": logits[positions].astype(np.float32),
                f"greedy_{i}": np.array(greedy, np.int32),
            }
        )
        min_gap = min(min_gap, top2_gap(logits[-1]))
    np.savez_compressed(os.path.join(FIXTURES, f"tiny_{name}_reference.npz"), **arrays)
    print(f"tiny_{name}: {sum(p.numel() for p in model.parameters())} params, min top-2 gap {min_gap:.4f}")


def load_smollm2():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sys.path.insert(0, ROOT)
    from trellis_jax.checkpoints import default_gguf_path

    path = default_gguf_path()
    folder, filename = os.path.split(path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32).eval()
    return tokenizer, model, filename


def make_smollm2(tokenizer, model, filename):
    import torch

    rng = np.random.default_rng(0)
    fixed_ids = rng.choice(model.config.vocab_size, 448, replace=False)
    arrays, gaps = {}, []
    for i, prompt in enumerate(SMOLLM2_PROMPTS):
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        with torch.no_grad():
            last = model(torch.tensor([ids])).logits[0, -1].numpy()
        vocab_ids = np.unique(np.concatenate([np.argsort(last)[-64:], fixed_ids])).astype(np.int32)
        greedy = torch_greedy(model, ids, SMOLLM2_GREEDY_STEPS)
        arrays.update(
            {
                f"prompt_{i}": np.array(ids, np.int32),
                f"vocab_ids_{i}": vocab_ids,
                f"logits_{i}": last[vocab_ids].astype(np.float32),
                f"greedy_{i}": np.array(greedy, np.int32),
            }
        )
        gaps.append(top2_gap(last))
        print(f"  prompt {i}: {len(ids)} tokens -> {tokenizer.decode(greedy)!r}")
    np.savez_compressed(os.path.join(FIXTURES, "smollm2_reference.npz"), source=np.array(filename), **arrays)
    print(f"smollm2: {len(SMOLLM2_PROMPTS)} prompts, min top-2 gap at the last prompt token {min(gaps):.4f}")


def make_tokenizer_reference(tokenizer, filename):
    cases = [{"text": text, "ids": tokenizer.encode(text, add_special_tokens=False)} for text in TOKENIZER_TEXTS]
    chats = [
        {
            "messages": messages,
            "add_generation_prompt": gen,
            "text": tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen),
        }
        for messages, gen in CHAT_CASES
    ]
    reference = {
        "source": filename,
        "made_by": "tools/make_fixtures.py: transformers AutoTokenizer.from_pretrained(dir, gguf_file=...), "
        "encode(text, add_special_tokens=False) (special-token text is parsed), apply_chat_template",
        "cases": cases,
        "chat": chats,
    }
    with open(os.path.join(FIXTURES, "tokenizer_reference.json"), "w", encoding="utf-8") as f:
        json.dump(reference, f, ensure_ascii=False, indent=1)
    print(f"tokenizer: {len(cases)} texts, {len(chats)} chats")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("tiny", "smollm2", "tokenizer"))
    args = parser.parse_args()
    os.makedirs(FIXTURES, exist_ok=True)
    if args.only in (None, "tiny"):
        tokenizer = train_tiny_tokenizer()
        for seed, (name, config) in enumerate(tiny_configs().items()):
            make_tiny(name, config, tokenizer, seed)
    if args.only in (None, "smollm2", "tokenizer"):
        tokenizer, model, filename = load_smollm2()
        if args.only in (None, "smollm2"):
            make_smollm2(tokenizer, model, filename)
        if args.only in (None, "tokenizer"):
            make_tokenizer_reference(tokenizer, filename)


if __name__ == "__main__":
    main()
