"""TieredPageStore under random puts, gets and discards while the writer thread runs: a page served is always
its key's page, a discarded page never comes back, and a page kept is never lost while both tiers have room."""

import random

import numpy as np
from kv_pages import FINGERPRINT, SHAPE, chain, page_for

from trellis_jax.kvstore import DiskPageStore, HostPageStore, TieredPageStore

PAGE_BYTES = int(np.prod(SHAPE)) * 4


def test_random_operations_agree_with_a_set_of_kept_keys(tmp_path):
    rng = random.Random(0)
    pages = chain(40)
    store = TieredPageStore(HostPageStore(3 * PAGE_BYTES), DiskPageStore(tmp_path, FINGERPRINT, 1 << 26))
    kept: set[bytes] = set()
    for _ in range(600):
        entry = rng.choice(pages)
        op = rng.random()
        if op < 0.45:
            assert store.put(entry, page_for(entry))
            kept.add(entry.key)
        elif op < 0.85:
            got = store.get(entry.key)
            assert (got is not None) == (entry.key in kept)
            if got is not None:
                np.testing.assert_array_equal(got, page_for(entry))
        elif op < 0.97:
            store.discard(entry.key)
            kept.discard(entry.key)
        else:
            store.flush()
    store.flush()
    assert {e.key for e in store.entries()} == kept
    assert store.stats()["writeback_dropped"] == 0
