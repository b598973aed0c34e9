"""Texts the fixture generator (tools/make_fixtures.py) feeds to the reference implementation."""

SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


def chat(user: str) -> str:
    return f"{SYSTEM}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


# >= 8 prompts for SmolLM2: plain text and pre-rendered chats (special tokens parsed).
SMOLLM2_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a small village by the sea,",
    "The three primary colors are",
    chat("What is the boiling point of water in Celsius?"),
    chat("Write a haiku about autumn leaves."),
    chat("List three fruits that are red."),
    "Water is made of hydrogen and",
    "1, 2, 3, 4, 5,",
    chat("Translate 'good morning' into French."),
]

# A varied set for tokenizer parity: code, emoji, CJK, whitespace runs, special tokens, odd bytes.
TOKENIZER_TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; ++i) { sum += x[i]; }",
    "import numpy as np\nx = np.arange(10)  # comment\n\tprint(x)",
    "I love 🍕 and 🎉! 👍🏽 👨‍👩‍👧",
    "日本語のテキストと中文字符，还有한국어.",
    "   leading spaces and trailing   ",
    "tabs\t\tand\nnewlines\n\n\nand   runs     of      spaces",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text after a special token",
    "Numbers: 1234567890 3.14159 -42 1e-5 0x1F",
    "Ünïcödé àccents: café, naïve, Straße, Ærøskøbing",
    "URLs like https://example.com/path?q=1&r=2 and emails a.b@c.org",
    "Mixed CASE words, CamelCase, snake_case and kebab-case.",
    "Repeated!!!??? punctuation... — dashes – and “quotes”",
    "",
    " ",
    "\n",
    "a",
]

CHAT_CASES = [
    ([{"role": "user", "content": "Hello!"}], True),
    ([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}], True),
    (
        [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3+3?"},
        ],
        True,
    ),
    ([{"role": "user", "content": "Bye"}], False),
]

# Training text for the tiny fixtures' BPE tokenizer (only needs to be fixed, not meaningful).
TOKENIZER_TRAINING_TEXT = " ".join(
    [
        "the cat sat on the mat and the dog sat on the log",
        "hello world this is a tiny tokenizer for tests of a tiny model",
        "def main(): return 0  # code with spaces and symbols",
        "one two three four five six seven eight nine ten",
        "user assistant system message content role",
    ]
    * 4
)
