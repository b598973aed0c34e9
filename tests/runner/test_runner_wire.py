"""The two-buffer wire format carries every step input through jit unchanged."""

import jax
import numpy as np

from trellis_jax.model.inputs import StepInputs
from trellis_jax.runner import wire


def _inputs(tokens=6, rows=3, pages=4):
    rng = np.random.default_rng(0)
    model = StepInputs(
        token_ids=rng.integers(0, 1000, tokens).astype(np.int32),
        positions=np.arange(tokens, dtype=np.int32),
        slot_mapping=rng.integers(0, 99, tokens).astype(np.int32),
        page_table=rng.integers(0, 50, (rows, pages)).astype(np.int32),
        kv_lens=np.array([5, 9, 0], np.int32),
        cu_q_lens=np.array([0, 2, 6, 6], np.int32),
        num_seqs=np.array(2, np.int32),
        logits_indices=np.array([1, 5, 0], np.int32),
    )
    knobs = {
        "temperature": np.array([0.0, 0.7, 1.0], np.float32),
        "top_k": np.array([0, 40, -1], np.int32),
        "top_p": np.array([1.0, 0.9, 1.0], np.float32),
        "min_p": np.array([0.0, 0.05, 0.0], np.float32),
        "presence_penalty": np.array([-1.5, 0.0, 2.0], np.float32),
        "frequency_penalty": np.array([0.25, -0.0, 0.0], np.float32),
        "repetition_penalty": np.array([1.0, 1.1, 1e-3], np.float32),
        "seed": np.array([0, 2**32 - 1, 2**31], np.uint32),
        "rng_step": np.array([0, 7, 0], np.int32),
        "num_logprobs": np.array([0, 20, 0], np.int32),
    }
    return model, knobs


def test_round_trip_through_jit_is_exact():
    model, knobs = _inputs()
    counts, mask = np.zeros((3, 8), np.int32), np.zeros((3, 8), np.bool_)
    tokens, seqs = wire.encode(model, knobs)
    assert tokens.shape == (6, 4) and seqs.shape == (3, 4 + wire.NUM_COLUMNS)
    decoded = jax.jit(wire.decode)(tokens, seqs, counts, mask)
    for name, value in model._asdict().items():
        np.testing.assert_array_equal(getattr(decoded.model, name), value, err_msg=name)
    for name, value in knobs.items():
        got = np.asarray(getattr(decoded.sampling, name))
        assert got.dtype == value.dtype, name
        np.testing.assert_array_equal(got.view(np.uint32), value.view(np.uint32), err_msg=name)  # bit for bit
