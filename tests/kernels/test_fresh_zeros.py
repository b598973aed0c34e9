"""fresh_zeros: zeros like jnp.zeros, host memory backed only where written, donated in place."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import fresh_zeros as fz

MIB = 2**20


def _native_or_skip():
    if reason := fz.native_available():
        pytest.skip(reason)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.int8])
@pytest.mark.parametrize("shape", [(3, 5, 7), (3, 1000, 113)])  # below and above the kernel's remap size
def test_native_reads_as_zeros_like_the_reference(dtype, shape):
    _native_or_skip()
    got = fz.fresh_zeros(shape, dtype, implementation="native")
    assert (got.shape, got.dtype) == (shape, jnp.dtype(dtype))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(fz.fresh_zeros(shape, dtype, implementation="xla")))


def test_memory_freed_dirty_is_handed_back_as_zeros():
    _native_or_skip()
    shape = (3, 1000, 113)  # 1.3 MiB: not a whole number of pages, and small enough for the allocator to reuse
    for _ in range(3):
        dirty = jnp.full(shape, 7.0, jnp.float32).block_until_ready()
        del dirty
        assert not np.asarray(fz.fresh_zeros(shape, jnp.float32, implementation="native")).any()


def test_native_takes_no_memory_until_written():
    _native_or_skip()
    shape = (64, MIB)  # 256 MiB of float32
    fz.fresh_zeros((64, 1024), jnp.float32, implementation="native").block_until_ready()  # loaded and traced
    before = _resident_bytes()
    pool = fz.fresh_zeros(shape, jnp.float32, implementation="native").block_until_ready()
    assert _resident_bytes() - before < 32 * MIB
    del pool


def test_donated_native_buffer_is_updated_in_place():
    _native_or_skip()
    pool = fz.fresh_zeros((8, 512, 1024), jnp.float32, implementation="native")  # 16 MiB
    address = pool.unsafe_buffer_pointer()
    write = jax.jit(lambda p, i: p.at[i].set(i + 1.0), donate_argnums=0)
    for i in range(3):
        pool = write(pool, i)
        assert pool.unsafe_buffer_pointer() == address
    np.testing.assert_array_equal(np.asarray(pool[:, 0, 0]), [1, 2, 3, 0, 0, 0, 0, 0])


def test_unknown_implementation_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown implementation 'memset'"):
        fz.fresh_zeros((2, 2), jnp.float32, implementation="memset")


def test_negative_dimension_is_a_clear_error():
    with pytest.raises(ValueError, match="negative dimension"):
        fz.fresh_zeros((2, -1), jnp.float32)


def test_without_the_native_kernel_it_is_jnp_zeros(monkeypatch):
    monkeypatch.setattr(fz, "native_available", lambda: "no C++ compiler found")
    monkeypatch.setattr(fz, "_native", lambda *args: pytest.fail("the native path ran"))
    got = fz.fresh_zeros((4, 3), jnp.bfloat16)
    assert got.dtype == jnp.bfloat16 and not np.asarray(got, np.float32).any()
