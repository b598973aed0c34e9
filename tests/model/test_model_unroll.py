"""The unrolled layer loop (`unroll_layers=True`, a GPU speed option) computes what the scan computes."""

import numpy as np
from model_testlib import PAGE_SIZE

from trellis_jax.model import build_step_inputs, init_kv_pages, jit_forward, sequential_page_tables

PROMPT = np.random.default_rng(3).integers(3, 320, 21).tolist()


def _forward(loaded, unroll_layers):
    tables = sequential_page_tables([len(PROMPT)], PAGE_SIZE)
    kv = init_kv_pages(loaded.config, 1 + len(tables[0]), PAGE_SIZE)
    batch = build_step_inputs([PROMPT], [0], tables, PAGE_SIZE)
    logits, kv = jit_forward(loaded.params, kv, batch, config=loaded.config, unroll_layers=unroll_layers)
    return np.asarray(logits), np.asarray(kv.k), np.asarray(kv.v)


def test_unrolled_layers_match_the_scan(tiny_model):
    loaded = tiny_model("llama")
    scanned, unrolled = _forward(loaded, False), _forward(loaded, True)
    for a, b in zip(scanned, unrolled):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
