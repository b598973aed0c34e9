"""The native greedy statistics (argmax, logsumexp per row) against the jnp reference."""

import jax.numpy as jnp
import numpy as np
import pytest

import pallas_kernels.greedy_stats as gs


def _native_or_skip():
    if reason := gs.native_available():
        pytest.skip(reason)


@pytest.mark.parametrize("rows,vocab", [(1, 5), (3, 16), (2, 49152), (32, 1000), (5, 33)])
def test_native_matches_reference(rows, vocab):
    _native_or_skip()
    logits = jnp.asarray(np.random.default_rng(rows * vocab).normal(0, 4, (rows, vocab)).astype(np.float32))
    ids, lse = gs.greedy_stats(logits, implementation="native")
    ref_ids, ref_lse = gs.reference_greedy_stats(logits)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-6, atol=1e-5)


def test_ties_pick_the_first_index_in_and_past_the_vector_body():
    _native_or_skip()
    logits = np.zeros((3, 40), np.float32)
    logits[0, [9, 18]] = 5.0  # both in the 16-lane body; the later index sits in the lower lane
    logits[1, [3, 19]] = 5.0  # same lane, different vectors
    logits[2, [33, 38]] = 5.0  # both in the scalar tail
    ids, _ = gs.greedy_stats(jnp.asarray(logits), implementation="native")
    np.testing.assert_array_equal(ids, [9, 3, 33])


def test_a_tail_maximum_beats_the_body():
    _native_or_skip()
    logits = np.zeros((1, 35), np.float32)
    logits[0, 34] = 1.0
    ids, lse = gs.greedy_stats(jnp.asarray(logits), implementation="native")
    assert int(ids[0]) == 34
    np.testing.assert_allclose(lse[0], np.log(34 + np.e), rtol=1e-6)


def test_masked_rows():
    _native_or_skip()
    logits = np.full((2, 20), -np.inf, np.float32)
    logits[1, 4] = 0.0
    ids, lse = gs.greedy_stats(jnp.asarray(logits), implementation="native")
    np.testing.assert_array_equal(ids, [0, 4])
    assert lse[0] == -np.inf and abs(float(lse[1])) < 1e-6


def test_choice_and_errors():
    with pytest.raises(ValueError, match="unknown implementation 'cuda'"):
        gs.greedy_stats(jnp.zeros((1, 4)), implementation="cuda")
    with pytest.raises(ValueError, match=r"must be \[S, V\]"):
        gs.greedy_stats(jnp.zeros((4,)))
    assert gs.choose(jnp.zeros((1, 4), jnp.bfloat16)) == "xla"


def test_a_build_without_avx512_is_not_chosen(monkeypatch):
    class PortableBuild:
        def TrellisGreedyStatsIsVectorized(self):
            return 0

    monkeypatch.setattr(gs, "load_target", lambda *_: PortableBuild())
    assert "without AVX-512" in gs.native_available()
    assert gs.choose(jnp.zeros((1, 4))) == "xla"
