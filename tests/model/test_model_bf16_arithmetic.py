"""A bfloat16 model keeps its residual stream in float32 (model.forward's arithmetic): only matmul inputs,
q and the KV pages are rounded to bfloat16."""

import jax
import jax.numpy as jnp

from trellis_jax.model import build_step_inputs, forward, init_kv_pages, sequential_page_tables

PAGE_SIZE = 4


def _layer_scan(loaded):
    prompt = list(range(3, 12))
    tables = sequential_page_tables([len(prompt)], PAGE_SIZE)
    kv = init_kv_pages(loaded.config, 1 + len(tables[0]), PAGE_SIZE)
    batch = build_step_inputs([prompt], [0], tables, PAGE_SIZE)
    jaxpr = jax.make_jaxpr(lambda p, k, b: forward(p, k, b, config=loaded.config))(loaded.params, kv, batch)
    (scan,) = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
    return scan, kv


def test_bfloat16_model_carries_a_float32_residual_stream(tiny_model):
    scan, kv = _layer_scan(tiny_model("llama", "bfloat16"))
    hidden = tiny_model("llama", "bfloat16").config.hidden_size
    residual = [v.aval for v in scan.outvars if v.aval.shape[-1:] == (hidden,) and v.aval.ndim == 2]
    assert residual and all(a.dtype == jnp.float32 for a in residual)


def test_bfloat16_model_keeps_bfloat16_kv_pages(tiny_model):
    scan, kv = _layer_scan(tiny_model("llama", "bfloat16"))
    pages = [v.aval for v in scan.outvars if v.aval.shape == kv.k.shape]
    assert len(pages) == 2 and all(a.dtype == jnp.bfloat16 for a in pages)
