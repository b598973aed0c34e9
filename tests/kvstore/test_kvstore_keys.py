"""chain_key: a page key names the page's tokens, everything before them, and the namespace."""

from trellis_jax.kvstore import PAGE_KEY_BYTES, chain_key

PARENT = chain_key(None, [1, 2, 3, 4], "")


def test_a_key_is_its_fixed_size():
    assert len(PARENT) == PAGE_KEY_BYTES


def test_the_same_page_after_the_same_prefix_has_the_same_key():
    assert chain_key(PARENT, [5, 6, 7, 8], "") == chain_key(PARENT, (5, 6, 7, 8), "")


def test_another_parent_changes_the_key():
    other_parent = chain_key(None, [1, 2, 3, 9], "")
    assert chain_key(PARENT, [5, 6, 7, 8], "") != chain_key(other_parent, [5, 6, 7, 8], "")


def test_another_namespace_changes_the_key():
    assert chain_key(PARENT, [5, 6, 7, 8], "") != chain_key(PARENT, [5, 6, 7, 8], "tenant-a")


def test_the_first_page_differs_from_a_later_page_with_the_same_tokens():
    assert chain_key(None, [5, 6, 7, 8], "") != chain_key(PARENT, [5, 6, 7, 8], "")
