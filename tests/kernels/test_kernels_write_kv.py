"""write_kv: new K/V land in their slots of the named layer, nothing else changes."""
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


def test_out_of_range_slots_are_dropped_not_wrapped():
    k, v = _pages()
    k2, _ = write_kv(k, v, 0, jnp.full((1, H, D), 7.0), jnp.full((1, H, D), 7.0), jnp.array([P * S]))
    assert float(jnp.abs(k2).sum()) == 0.0


def test_shape_mismatch_names_the_shapes():
    k, v = _pages()
    with pytest.raises(ValueError, match=r"k_new must be \[T, 2, 8\].*got \(1, 3, 8\)"):
        write_kv(k, v, 0, jnp.zeros((1, 3, D)), jnp.zeros((1, H, D)), jnp.array([0]))
