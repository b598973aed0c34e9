"""The example ARC policy: registered by name in the cache's registry, sound under random use, adaptive."""

import random

import pytest
from ablate_traces import single_page_trace

from trellis_jax.ablate import ReplayConfig, replay
from trellis_jax.ablate.policies.arc import ARCPolicy
from trellis_jax.cache import RadixCache, get_policy, policy_names


def test_arc_is_registered_in_the_cache_registry():
    assert "arc" in policy_names() and isinstance(get_policy("arc"), ARCPolicy)


def test_arc_keeps_the_cache_consistent_under_random_requests():
    rng = random.Random(0)
    cache = RadixCache(num_pages=24, page_size=2, policy="arc")
    for _ in range(400):
        prompt = [rng.randrange(3) for _ in range(rng.randrange(2, 14))]
        match = cache.match(prompt[:-1])
        cache.lock(match.handle)
        own = cache.alloc_pages(-(-len(prompt) // 2) - len(match.page_ids))
        full = len(prompt) // 2
        new = full - len(match.page_ids)
        if new > 0:
            cache.insert(prompt[: full * 2], match.page_ids + own[:new])
        cache.unlock(match.handle)
        cache.free_pages(own[max(new, 0) :])
        cache.check_integrity()
    policy = cache.policy
    assert policy.pages[0] + policy.pages[1] == cache.num_evictable_pages + cache.num_locked_pages


def test_arc_protects_a_reused_page_from_a_scan():
    # "a" is hit twice (frequent), then a scan of one-off pages: ARC evicts the scan, LRU evicts "a"
    keys = "aaa" + "bcdefg" + "a"
    arc = replay(single_page_trace(keys), ReplayConfig(num_pages=4, page_size=2, policy="arc"))
    lru = replay(single_page_trace(keys), ReplayConfig(num_pages=4, page_size=2, policy="lru"))
    assert arc.cached_tokens[-1] == 2 and lru.cached_tokens[-1] == 0


def test_ghost_hit_in_the_recent_list_grows_the_recent_target():
    # A paging cache of 3 pages: d pushes out "a" (recent, least recently used), leaving a ghost in B1;
    # "a" comes back: a ghost hit, so the recent target grows by its one page
    policy = ARCPolicy()
    replay(single_page_trace("abcda"), ReplayConfig(num_pages=4, page_size=2, policy=policy))
    assert policy.target_recent_pages == 1


DEEP_FIRST = """
from trellis_jax.cache import HeapPolicy, register_policy

@register_policy("test_deep_first")
class DeepFirst(HeapPolicy):
    name = "test_deep_first"
    def sort_key(self, node):
        return -node.depth, node.last_access
"""


def test_a_policy_in_one_small_file_runs_in_the_cli(tmp_path, monkeypatch):
    (tmp_path / "my_ablate_policy.py").write_text(DEEP_FIRST)
    monkeypatch.syspath_prepend(str(tmp_path))
    from trellis_jax.ablate.cli import main

    out = tmp_path / "out"
    assert (
        main(
            [
                "--policy-module",
                "my_ablate_policy",
                "--policies",
                "lru,test_deep_first",
                "--workload",
                "few_shot",
                "--scale",
                "0.03",
                "--capacities",
                "64",
                "--orders",
                "fcfs",
                "--no-plots",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "test_deep_first" in (out / "rows.csv").read_text()
    assert RadixCache(8, 2, policy="test_deep_first").policy.name == "test_deep_first"


MODULE_POLICY = """
from trellis_jax.cache import HeapPolicy, register_policy

@register_policy("test_by_module")
class ByModule(HeapPolicy):
    name = "test_by_module"
    def sort_key(self, node):
        return node.last_access
"""


def test_module_colon_name_imports_the_policy_for_name_only_entry_points(tmp_path, monkeypatch):
    # What the server's --eviction-policy passes through: a plain string, resolved by get_policy
    (tmp_path / "my_ablate_module_policy.py").write_text(MODULE_POLICY)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert get_policy("my_ablate_module_policy:test_by_module").name == "test_by_module"
    assert RadixCache(8, 2, policy="trellis_jax.ablate.policies.arc:arc").policy.name == "arc"


def test_module_colon_name_with_a_missing_module_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        get_policy("no_such_module_xyz:arc")
