"""The native matmuls are batch-invariant: row r's output for a given input row is bitwise the same whatever
the other rows are, how many there are (M, the step's bucket) and where among them the row sits.

That is what `--deterministic` relies on (runner/invariance.py, model.forward's batch_invariant): each
output element is one float32 sum over K in a fixed order, whichever register tile computes the row.
The M values cross every tile size of both builds (AVX-512: 8 rows, AVX2: 4), the 512-row pass and
the M above which the AVX2 build hands steps to XLA by default (64).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.matmul import api, native_bf16, native_f32

K, N = 320, 208  # N: 4 strips of 48 and a partial 16-column vector
PLACES = [(1, 0), (3, 2), (8, 5), (64, 63), (65, 17), (130, 129), (600, 513)]  # (M, the row's place)


def _skip_unless(reason):
    if reason:
        pytest.skip(reason)


def _row_in_batch(row, m, place, seed):
    """An [m, K] batch of random rows with `row` at `place`."""
    x = np.random.default_rng(seed).standard_normal((m, K)).astype(np.float32)
    x[place] = row
    return jnp.asarray(x)


def _row_outputs(matmul, w, dtype, rows_arg):
    rng = np.random.default_rng(1)
    row = rng.standard_normal(K).astype(np.float32)
    outputs = []
    for seed, (m, place) in enumerate(PLACES):
        x = _row_in_batch(row, m, place, seed).astype(dtype)
        y = jax.jit(lambda x, w: matmul(x, w, 1, m if rows_arg else None))(x, w)  # noqa: B023 (called at once, inside the loop)
        outputs.append(np.asarray(y[place]))
    return outputs


@pytest.mark.parametrize("layout", ["plain", "strips"])
def test_float32_native_row_does_not_depend_on_the_batch(layout):
    _skip_unless(native_f32.available())
    w = jnp.asarray(np.random.default_rng(0).standard_normal((2, K, N)), jnp.float32)
    w = native_f32.pack_strips(w) if layout == "strips" else w
    outputs = _row_outputs(
        lambda x, w, l, r: api.linear(x, w, l, r, implementation="native"), w, jnp.float32, rows_arg=True
    )
    for (m, place), y in zip(PLACES, outputs):
        np.testing.assert_array_equal(y, outputs[0], err_msg=f"M={m}, row {place}")


def test_bfloat16_packed_row_does_not_depend_on_the_batch():
    _skip_unless(native_bf16.available())
    w = native_bf16.pack_pairs(jnp.asarray(np.random.default_rng(0).standard_normal((2, K, N)), jnp.float32))
    outputs = _row_outputs(
        lambda x, w, l, r: api.linear(x, w, l, r, implementation="native", out_dtype=jnp.float32),
        w,
        jnp.bfloat16,
        True,
    )
    for (m, place), y in zip(PLACES, outputs):
        np.testing.assert_array_equal(y, outputs[0], err_msg=f"M={m}, row {place}")


def test_padding_rows_past_rows_do_not_change_a_real_row():
    _skip_unless(native_f32.available())
    w = jnp.asarray(np.random.default_rng(0).standard_normal((2, K, N)), jnp.float32)
    x = _row_in_batch(np.ones(K, np.float32), 64, 3, seed=5)
    call = jax.jit(lambda x, rows: api.linear(x, w, 1, rows, implementation="native"))
    np.testing.assert_array_equal(np.asarray(call(x, jnp.int32(4)))[3], np.asarray(call(x, jnp.int32(64)))[3])
