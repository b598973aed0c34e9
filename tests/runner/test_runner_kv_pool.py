"""KV pool sizing from a page count, a byte budget or a fraction of free memory, and its report."""

from __future__ import annotations

import jax
import pytest
from runner_helpers import TINY

from trellis_jax.runner import kv_pool
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


def test_cpu_default_budget_is_the_same_when_available_ram_moves_a_little(monkeypatch):
    budgets = set()
    for available in (11.6 * 2**30, 11.8 * 2**30, 11.9 * 2**30):  # a quarter of it: 2.9-2.975 GiB
        monkeypatch.setattr(kv_pool, "_host_available_memory", lambda available=available: int(available))
        budgets.add(default_budget_bytes(jax.devices("cpu")[0]))
    assert budgets == {int(2.5 * 2**30)}


@pytest.mark.parametrize("available_gib", [0.3, 1.0, 6.9, 11.6, 15.9, 64.0])
def test_cpu_default_budget_keeps_at_least_80_percent_of_its_cap(monkeypatch, available_gib):
    monkeypatch.setattr(kv_pool, "_host_available_memory", lambda: int(available_gib * 2**30))
    cap = min(int(available_gib * 2**30 / 4), 4 * 2**30)
    assert 0.8 * cap <= default_budget_bytes(jax.devices("cpu")[0]) <= cap
