"""Helpers for the model tests: run prompts through the paged forward and read reference fixtures."""

import jax
import numpy as np

from trellis_jax.model import build_step_inputs, forward, init_kv_pages, jit_forward, sequential_page_tables

PAGE_SIZE = 4  # small pages so short prompts span several pages
# Fixed padded shapes (token rows, sequence rows, pages per sequence): one compile per model config.
TOKEN_ROWS, SEQ_ROWS, PAGES_PER_SEQ = 128, 4, 16


def logits_at_positions(loaded, ids, positions, attn_impl=None) -> np.ndarray:
    """Logits [len(positions), V] after ids[:p+1] for each p: one batch, one sequence per prefix."""
    prompts = [list(ids[: p + 1]) for p in positions]
    tables = sequential_page_tables([len(p) for p in prompts], PAGE_SIZE)
    kv = init_kv_pages(loaded.config, 1 + max(SEQ_ROWS * PAGES_PER_SEQ, sum(map(len, tables))), PAGE_SIZE)
    pages = max(PAGES_PER_SEQ, max(len(t) for t in tables))
    batch = build_step_inputs(
        prompts,
        [0] * len(prompts),
        tables,
        PAGE_SIZE,
        num_token_rows=max(TOKEN_ROWS, sum(map(len, prompts))),
        num_seq_rows=max(SEQ_ROWS, len(prompts)),
        pages_per_seq=pages,
    )
    logits, _ = jit_forward(loaded.params, kv, batch, config=loaded.config, attn_impl=attn_impl)
    return np.asarray(logits)[: len(prompts)]


def read_reference(path) -> list[dict]:
    """npz with prompt_i, logits_i, ... -> one dict per prompt."""
    data = np.load(path)
    count = sum(1 for key in data.files if key.startswith("prompt_"))
    return [{key[: -len(f"_{i}")]: data[key] for key in data.files if key.endswith(f"_{i}")} for i in range(count)]


class PagedSequences:
    """Sequences with fixed pages in one KV buffer, fed chunk by chunk (prefix offset = tokens cached)."""

    def __init__(self, loaded, max_lens):
        self.loaded = loaded
        self.tables = sequential_page_tables(max_lens, PAGE_SIZE)
        self.cached = [0] * len(max_lens)
        self.kv = init_kv_pages(loaded.config, 1 + max(SEQ_ROWS * PAGES_PER_SEQ, sum(map(len, self.tables))), PAGE_SIZE)

    def step(self, chunks: dict) -> dict:
        """chunks {seq index: new token ids} -> {seq index: logits [V] at its last new token}."""
        order = sorted(chunks)
        batch = build_step_inputs(
            [list(chunks[i]) for i in order],
            [self.cached[i] for i in order],
            [self.tables[i] for i in order],
            PAGE_SIZE,
            num_token_rows=TOKEN_ROWS,
            num_seq_rows=SEQ_ROWS,
            pages_per_seq=PAGES_PER_SEQ,
        )
        logits, self.kv = jit_forward(self.loaded.params, self.kv, batch, config=self.loaded.config)
        for i in order:
            self.cached[i] += len(chunks[i])
        return {i: np.asarray(logits[row]) for row, i in enumerate(order)}


def prefill_then_decode(config, params, prompt):
    """A fresh jit (speed paths are chosen at trace time) of `prompt`'s prefill, then one decode step of
    token 7 -> (prefill logits, decode logits, k pages, v pages) as float32 numpy arrays."""
    step = jax.jit(forward, static_argnames=("config", "attn_impl", "unroll_layers"))
    tables = sequential_page_tables([len(prompt) + 1], PAGE_SIZE)
    kv = init_kv_pages(config, 1 + len(tables[0]), PAGE_SIZE)
    first, kv = step(params, kv, build_step_inputs([prompt], [0], tables, PAGE_SIZE), config=config)
    logits, kv = step(params, kv, build_step_inputs([[7]], [len(prompt)], tables, PAGE_SIZE), config=config)
    return tuple(np.asarray(a, np.float32) for a in (first, logits, kv.k, kv.v))
