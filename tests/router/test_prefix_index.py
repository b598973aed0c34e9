"""PrefixIndex: block-granular prefix matches per worker, namespaces apart, bounded by LRU."""

import pytest

from trellis_jax.router.prefix_index import PrefixIndex


def test_a_key_matches_its_full_blocks_only_under_the_worker_it_was_inserted_for():
    index = PrefixIndex(block_size=4, max_blocks=100)
    index.insert("a", index.block_names("", "abcdefghij"))
    assert index.match("a", index.block_names("", "abcdefghij")) == 8  # the 2-element tail is not a block
    assert index.match("b", index.block_names("", "abcdefghij")) == 0


def test_a_match_stops_at_the_first_block_that_differs():
    index = PrefixIndex(block_size=4, max_blocks=100)
    index.insert("a", index.block_names("", "abcdefghijkl"))
    assert index.match("a", index.block_names("", "abcdXfghijkl")) == 4


def test_the_same_text_in_another_namespace_does_not_match():
    index = PrefixIndex(block_size=4, max_blocks=100)
    index.insert("a", index.block_names("tenant1", "abcdefgh"))
    assert index.match("a", index.block_names("tenant2", "abcdefgh")) == 0


def test_the_least_recently_routed_blocks_go_first_past_the_cap():
    index = PrefixIndex(block_size=2, max_blocks=4)
    old, new = index.block_names("", "aabb"), index.block_names("", "ccdd")
    index.insert("a", old)
    index.insert("a", new)
    index.insert("a", old)  # touched again: now the most recent
    index.insert("a", index.block_names("", "eeff"))
    assert index.size("a") == 4
    assert index.match("a", old) == 4 and index.match("a", new) == 0


def test_forget_drops_a_workers_blocks():
    index = PrefixIndex(block_size=2, max_blocks=10)
    index.insert("a", index.block_names("", "aabb"))
    index.forget("a")
    assert index.size("a") == 0 and index.match("a", index.block_names("", "aabb")) == 0


def test_a_block_size_below_one_is_refused():
    with pytest.raises(ValueError, match="block_size"):
        PrefixIndex(block_size=0, max_blocks=10)
