"""See the model talk: a simple batched decoding loop over the paged forward, and its CLI.

    python -m trellis_jax.generate --prompt TEXT [--chat] [--max-tokens N] [--temperature T] [--json]
                                   [--model GGUF|HF_DIR|ORBAX_DIR|PRESET] [--dtype float32|bfloat16]
                                   [--compile-cache-dir DIR | --no-compile-cache]
                                   [--prepared-cache-dir DIR | --no-prepared-cache]

Contract: `generate_tokens(loaded, prompts, max_tokens, ...)` prefills every prompt in one call, then
decodes all sequences together with fixed shapes (one compile for prefill, one for decode), greedy at
temperature 0, else sampling from softmax(logits / T) with a seeded numpy generator. A sequence stops
after one of `stop_ids` (kept in the output) or max_tokens. The prompt text is tokenized with the
model's special tokens recognised, so a pre-rendered chat prompt works as given; `--chat` wraps it as
one user message with the model's chat template. The engine (trellis_jax/engine) is the real server path.
Like the engine CLIs, `main` keeps compiled programs and the loaded model in the user cache directory by
default (trellis_jax/cli.py), so a second run neither compiles nor parses the model file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from trellis_jax.cli import add_compile_cache_flags, add_model_flags, compile_cache_dir, new_parser, prepared_cache_dir
from trellis_jax.model import KVPages, build_step_inputs, init_kv_pages, jit_forward, sequential_page_tables

PAGE_SIZE = 16


class Prefilled(NamedTuple):
    """The state after prefilling a batch: what the decode loop continues from."""

    logits: np.ndarray  # [S, vocab] at each prompt's last token
    kv: KVPages
    tables: list[list[int]]
    pages_per_seq: int


def prefill(loaded, prompts: Sequence[Sequence[int]], max_tokens: int, *, attn_impl: str | None = None) -> Prefilled:
    """Run every prompt in one forward call, with pages reserved for `max_tokens` more tokens each."""
    if max_tokens < 1 or not prompts or min(len(p) for p in prompts) < 1:
        raise ValueError(f"need max_tokens >= 1 and non-empty prompts, got {max_tokens}, {[len(p) for p in prompts]}")
    config = loaded.config
    if max(len(p) for p in prompts) + max_tokens > config.max_position_embeddings:
        raise ValueError(f"prompt + max_tokens exceeds the model's context ({config.max_position_embeddings})")
    tables = sequential_page_tables([len(p) + max_tokens for p in prompts], PAGE_SIZE)
    pages_per_seq = max(len(t) for t in tables)
    kv = init_kv_pages(config, 1 + sum(len(t) for t in tables), PAGE_SIZE)
    batch = build_step_inputs(
        prompts,
        [0] * len(prompts),
        tables,
        PAGE_SIZE,
        pages_per_seq=pages_per_seq,
        num_token_rows=_bucket(sum(len(p) for p in prompts)),
    )
    logits, kv = jit_forward(loaded.params, kv, batch, config=config, attn_impl=attn_impl)
    return Prefilled(np.asarray(logits), kv, tables, pages_per_seq)


def generate_tokens(
    loaded,
    prompts: Sequence[Sequence[int]],
    max_tokens: int,
    *,
    temperature: float = 0.0,
    seed: int = 0,
    stop_ids: Sequence[int] = (),
    attn_impl: str | None = None,
) -> list[list[int]]:
    """New token ids for each prompt (batched decoding over paged KV)."""
    state = prefill(loaded, prompts, max_tokens, attn_impl=attn_impl)
    rng = np.random.default_rng(seed)
    kv, lengths = state.kv, [len(p) for p in prompts]
    outputs = [[token] for token in _sample(state.logits, temperature, rng)]
    for _ in range(max_tokens - 1):
        if all(_finished(out, stop_ids) for out in outputs):
            break
        batch = build_step_inputs(
            [[out[-1]] for out in outputs], lengths, state.tables, PAGE_SIZE, pages_per_seq=state.pages_per_seq
        )
        logits, kv = jit_forward(loaded.params, kv, batch, config=loaded.config, attn_impl=attn_impl)
        lengths = [n + 1 for n in lengths]
        for out, token in zip(outputs, _sample(np.asarray(logits), temperature, rng)):
            if not _finished(out, stop_ids):
                out.append(token)
    return outputs


def _bucket(num_tokens: int) -> int:
    """Pad prefill lengths to a power of two (>= 16) so nearby prompt sizes share one compile."""
    return max(16, 1 << (num_tokens - 1).bit_length())


def _finished(tokens: list[int], stop_ids: Sequence[int]) -> bool:
    return bool(tokens) and tokens[-1] in stop_ids


def _sample(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> list[int]:
    """logits [S, V] -> one token per row."""
    if temperature <= 0:
        return [int(i) for i in logits.argmax(axis=-1)]
    scaled = logits / temperature
    probs = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    return [int(rng.choice(len(row), p=row)) for row in probs]


def prompt_token_ids(tokenizer, prompt: str, chat: bool) -> list[int]:
    if chat:
        return tokenizer.encode_chat([{"role": "user", "content": prompt}], add_generation_prompt=True)
    return tokenizer.encode(prompt, parse_special=True)


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("trellis-generate", __doc__.split("\n")[0])
    parser.add_argument("--prompt", required=True, help="prompt text (special tokens such as <|im_start|> are parsed)")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt as one user message (chat template)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens to generate at most")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 = greedy")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--json", action="store_true", help="print prompt_token_ids, token_ids and text as JSON")
    add_model_flags(
        parser, dtype_default="float32", dtype_help="model dtype (default: float32: this is the plain reference loop)"
    )
    add_compile_cache_flags(parser)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_tokens < 1 or args.temperature < 0:
        parser.error("--max-tokens must be >= 1 and --temperature >= 0")
    return args


def main(argv=None) -> int:
    from trellis_jax.checkpoints import load_model

    args = parse_args(argv)
    if compile_cache_dir(args) is not None:  # the prefill and decode programs load instead of compiling
        from trellis_jax.runner.compile_cache import enable_persistent_compile_cache

        enable_persistent_compile_cache(compile_cache_dir(args))
    try:  # bad checkpoints (CheckpointError), empty or too long prompts: one line, no traceback
        loaded = load_model(args.model, dtype=args.dtype, prepared_cache_dir=prepared_cache_dir(args))
        if loaded.tokenizer is None:
            raise ValueError(f"{loaded.source} has no tokenizer files; cannot tokenize a text prompt")
        tokenizer = loaded.tokenizer
        prompt_ids = prompt_token_ids(tokenizer, args.prompt, args.chat)
        [token_ids] = generate_tokens(
            loaded,
            [prompt_ids],
            args.max_tokens,
            temperature=args.temperature,
            seed=args.seed,
            stop_ids=tokenizer.eos_token_ids,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = tokenizer.decode(token_ids, skip_special_tokens=True)
    if args.json:
        print(json.dumps({"prompt_token_ids": prompt_ids, "token_ids": token_ids, "text": text}, ensure_ascii=False))
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
