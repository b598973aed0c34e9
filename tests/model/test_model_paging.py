"""The forward honours the paged-KV contract: the page table decides where K/V live, page 0 is the sink."""

import numpy as np
from model_testlib import PAGE_SIZE, PAGES_PER_SEQ, SEQ_ROWS, TOKEN_ROWS, logits_at_positions

from trellis_jax.model import build_step_inputs, init_kv_pages, jit_forward

PROMPT = list(range(3, 26))  # 23 tokens: 6 pages of 4


def run(loaded, tables, num_pages):
    kv = init_kv_pages(loaded.config, num_pages, PAGE_SIZE)
    batch = build_step_inputs(
        [PROMPT], [0], tables, PAGE_SIZE, num_token_rows=TOKEN_ROWS, num_seq_rows=SEQ_ROWS, pages_per_seq=PAGES_PER_SEQ
    )
    logits, kv = jit_forward(loaded.params, kv, batch, config=loaded.config)
    return np.asarray(logits[0]), kv


def test_scattered_page_table_gives_the_same_logits(tiny_model):
    loaded = tiny_model("llama")
    scattered, _ = run(loaded, [[40, 7, 33, 2, 19, 11]], 1 + SEQ_ROWS * PAGES_PER_SEQ)
    expected = logits_at_positions(loaded, PROMPT, [len(PROMPT) - 1])[0]
    assert np.abs(scattered - expected).max() <= 1e-5


def test_only_the_sequence_pages_and_the_sink_are_written(tiny_model):
    loaded = tiny_model("llama")
    pages = [40, 7, 33, 2, 19, 11]
    _, kv = run(loaded, [pages], 1 + SEQ_ROWS * PAGES_PER_SEQ)
    written = {p for p in range(kv.k.shape[2]) if np.abs(np.asarray(kv.k[:, :, p])).max() > 0}
    # Padded token rows write into the sink page 0 (zeros where the native matmul skips padding rows).
    assert set(pages) <= written <= set(pages) | {0}


def test_float32_and_bfloat16_logits_are_float32(tiny_model):
    for dtype in ("float32", "bfloat16"):
        loaded = tiny_model("llama", dtype)
        logits, kv = run(loaded, [[1, 2, 3, 4, 5, 6]], 1 + SEQ_ROWS * PAGES_PER_SEQ)
        assert logits.dtype == np.float32 and kv.k.dtype.name == dtype
