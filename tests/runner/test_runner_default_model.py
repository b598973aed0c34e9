"""The Runner on the real default model: prefill + greedy decode agree with model.forward, no recompiles."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trellis_jax.model import build_step_inputs, init_kv_pages, jit_forward
from trellis_jax.runner import Runner, backend_compile_count
from trellis_jax.step_plan import SequenceWork, StepPlan

PAGE_SIZE, ROWS = 16, 32
TABLE = [3, 1, 2]  # shuffled on purpose: the page table, not the page order, defines the sequence


def forward_greedy(model, tokens: list[int]) -> tuple[int, float]:
    kv = init_kv_pages(model.config, 4, PAGE_SIZE)
    batch = build_step_inputs([tokens], [0], [TABLE], PAGE_SIZE, num_token_rows=ROWS)
    logits, _ = jit_forward(model.params, kv, jax.tree.map(jnp.asarray, batch), config=model.config)
    logprobs = np.asarray(jax.nn.log_softmax(logits[0]))
    return int(np.argmax(logprobs)), float(logprobs.max())


@pytest.mark.slow
def test_greedy_decode_on_the_default_model_matches_forward(default_model):
    runner = Runner(
        default_model,
        page_size=PAGE_SIZE,
        num_pages=4,
        token_buckets=(ROWS,),
        seq_buckets=(1,),
        max_context_len=3 * PAGE_SIZE,
    )
    runner.warmup(progress=False)
    tokens = default_model.tokenizer.encode("The capital of France is")
    outputs = runner.run(StepPlan([SequenceWork("r", list(tokens), 0, TABLE, True)]))
    for _ in range(4):
        sampled = outputs.tokens["r"]
        token, logprob = forward_greedy(default_model, tokens)
        assert sampled.token_id == token
        assert sampled.logprob == pytest.approx(logprob, abs=1e-3)
        tokens.append(token)
        before = backend_compile_count()
        outputs = runner.run(StepPlan([SequenceWork("r", [token], len(tokens) - 1, TABLE, True)]))
        assert backend_compile_count() == before
    assert runner.num_compilations == 1
