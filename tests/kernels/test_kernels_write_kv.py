"""write_kv: new K/V land in their slots of the named layer, nothing else changes.

bfloat16 pages on CPU go through the native in-place writer: its rounding must equal XLA's float32 ->
bfloat16 conversion bit for bit, under jit with the pages donated as in the model's step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.ragged_paged_attention import write_kv

L, H, P, S, D = 2, 2, 5, 4, 8


def _pages():
    return jnp.zeros((L, H, P, S, D)), jnp.ones((L, H, P, S, D))


def test_tokens_land_in_their_slots():
    k, v = _pages()
    new = jnp.arange(3 * H * D, dtype=jnp.float32).reshape(3, H, D)
    k2, v2 = write_kv(k, v, 1, new, -new, jnp.array([9, 4, 19], jnp.int32))
    for t, slot in enumerate([9, 4, 19]):
        np.testing.assert_array_equal(k2[1, :, slot // S, slot % S], new[t])
        np.testing.assert_array_equal(v2[1, :, slot // S, slot % S], -new[t])


def test_other_slots_and_layers_are_untouched():
    k, v = _pages()
    k2, _ = write_kv(k, v, 0, jnp.full((1, H, D), 7.0), jnp.full((1, H, D), 7.0), jnp.array([6]))
    written = np.zeros((L, H, P, S), bool)
    written[0, :, 1, 2] = True
    assert np.all(np.asarray(k2)[written] == 7.0)
    assert np.all(np.asarray(k2)[~written] == 0.0)


def test_values_are_cast_to_the_page_dtype():
    k, v = (x.astype(jnp.bfloat16) for x in _pages())
    k2, v2 = write_kv(k, v, 0, jnp.full((1, H, D), 1.5), jnp.full((1, H, D), 2.5), jnp.array([0]))
    assert k2.dtype == v2.dtype == jnp.bfloat16
    assert float(k2[0, 0, 0, 0, 0]) == 1.5
    assert float(k[0, 0, 0, 0, 0]) == 0.0  # not donated: the caller's pages are left as they were


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_16_bit_pages_round_like_xla_under_jit_with_donation(dtype):
    rng = np.random.default_rng(0)
    k = jnp.asarray(rng.standard_normal((L, H, P, S, D)), dtype)
    v = jnp.asarray(rng.standard_normal((L, H, P, S, D)), dtype)
    new_k = jnp.asarray(rng.standard_normal((4, H, D)) * 3, jnp.float32)
    new_v = jnp.asarray(rng.standard_normal((4, H, D)) * 1e-3, jnp.float32)
    slots = jnp.array([3, 17, P * S + 2, 8], jnp.int32)  # the third is out of range: dropped
    expected_k, expected_v = np.array(k, np.float32), np.array(v, np.float32)
    for t in (0, 1, 3):
        expected_k[1, :, int(slots[t]) // S, int(slots[t]) % S] = np.asarray(new_k[t].astype(dtype), np.float32)
        expected_v[1, :, int(slots[t]) // S, int(slots[t]) % S] = np.asarray(new_v[t].astype(dtype), np.float32)
    step = jax.jit(lambda k, v: write_kv(k, v, jnp.int32(1), new_k, new_v, slots), donate_argnums=(0, 1))
    k2, v2 = step(k, v)
    assert k2.dtype == v2.dtype == dtype
    np.testing.assert_array_equal(np.asarray(k2, np.float32), expected_k)
    np.testing.assert_array_equal(np.asarray(v2, np.float32), expected_v)


def test_out_of_range_slots_are_dropped_not_wrapped():
    k, v = _pages()
    k2, _ = write_kv(k, v, 0, jnp.full((1, H, D), 7.0), jnp.full((1, H, D), 7.0), jnp.array([P * S]))
    assert float(jnp.abs(k2).sum()) == 0.0


def test_shape_mismatch_names_the_shapes():
    k, v = _pages()
    with pytest.raises(ValueError, match=r"k_new must be \[T, 2, 8\].*got \(1, 3, 8\)"):
        write_kv(k, v, 0, jnp.zeros((1, 3, D)), jnp.zeros((1, H, D)), jnp.array([0]))
