"""KV pool sizing from a page count, a byte budget or a fraction of free memory, and its report."""

from __future__ import annotations

import jax
import pytest
from runner_helpers import TINY

from trellis_jax.runner.kv_pool import default_budget_bytes, size_kv_pool

PAGE_BYTES = 4 * TINY.kv_bytes_per_token()  # page_size 4


def test_byte_budget_rounds_down_to_whole_pages():
    pool = size_kv_pool(TINY, page_size=4, kv_memory_bytes=10 * PAGE_BYTES + 1, default_pages=99)
    assert pool.num_pages == 10
    assert pool.num_bytes == 10 * PAGE_BYTES


def test_report_states_pages_tokens_and_mib():
    pool = size_kv_pool(TINY, page_size=4, num_pages=256, default_pages=99)
    mib = 256 * PAGE_BYTES / 2**20
    assert pool.describe().startswith(f"256 pages x 4 tokens = 1024 tokens of KV, {mib:.1f} MiB")


def test_fraction_of_free_memory_gives_some_pages():
    assert size_kv_pool(TINY, page_size=4, kv_memory_fraction=0.001, default_pages=99).num_pages >= 2


def test_default_is_capped_by_the_requested_default():
    assert size_kv_pool(TINY, page_size=4, default_pages=33).num_pages == 33


def test_default_budget_on_a_cpu_host_stays_within_4_gib():
    assert 0 < default_budget_bytes(jax.devices("cpu")[0]) <= 4 * 2**30


def test_default_pages_are_capped_by_the_default_budget():
    pool = size_kv_pool(TINY, page_size=4, default_pages=10**12)
    assert pool.num_bytes <= default_budget_bytes()


def test_two_budgets_at_once_are_rejected():
    with pytest.raises(ValueError, match="at most one"):
        size_kv_pool(TINY, page_size=4, num_pages=8, kv_memory_bytes=1 << 20, default_pages=99)


def test_budget_below_two_pages_is_rejected():
    with pytest.raises(ValueError, match="need >= 2"):
        size_kv_pool(TINY, page_size=4, kv_memory_bytes=PAGE_BYTES, default_pages=99)
