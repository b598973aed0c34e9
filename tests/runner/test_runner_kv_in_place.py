"""The runner's KV pool: allocated without writing it, and updated in place by every step (donation)."""

from __future__ import annotations

import numpy as np
import pytest

from pallas_kernels import fresh_zeros
from trellis_jax.runner import Runner
from trellis_jax.step_plan import SequenceWork, StepPlan

PAGE_SIZE = 4
NUM_PAGES = 4096  # 2 MiB per K and V array: above the native kernel's remap size


@pytest.fixture(scope="module")
def runner(tiny_random_model):
    return Runner(tiny_random_model, page_size=PAGE_SIZE, num_pages=NUM_PAGES, token_buckets=(4,), seq_buckets=(1,))


def test_fresh_pool_reads_as_zeros(runner):
    assert not np.asarray(runner._kv.k).any() and not np.asarray(runner._kv.v).any()


def test_steps_write_the_pool_in_place(runner):
    if reason := fresh_zeros.native_available():
        pytest.skip(reason)  # jnp.zeros pools are donated in place too, but this is about the fresh ones
    addresses = (runner._kv.k.unsafe_buffer_pointer(), runner._kv.v.unsafe_buffer_pointer())
    runner.run(StepPlan([SequenceWork("r", [5, 6, 7], 0, [NUM_PAGES - 1], True)]))
    runner.run(StepPlan([SequenceWork("r", [9], 3, [NUM_PAGES - 1], True)]))
    assert (runner._kv.k.unsafe_buffer_pointer(), runner._kv.v.unsafe_buffer_pointer()) == addresses
    written = np.asarray(runner._kv.k)[:, :, NUM_PAGES - 1]
    assert written.any(axis=-1).all()  # all four slots of the page, in every layer and head
