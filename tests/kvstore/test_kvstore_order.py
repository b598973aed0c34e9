"""parents_first: the order entries() lists pages in, for a restart that rebuilds tree paths top down."""

from kv_pages import chain

from trellis_jax.kvstore import PageEntry, chain_key
from trellis_jax.kvstore.order import parents_first


def keys(entries):
    return [e.key for e in entries]


def test_a_chain_given_backwards_comes_out_parents_first():
    pages = chain(5)
    assert keys(parents_first(reversed(pages))) == keys(pages)


def test_a_page_whose_parent_is_not_held_starts_a_chain_of_its_own():
    pages = chain(4)
    order = keys(parents_first([pages[3], pages[2]]))  # pages 0 and 1 evicted
    assert order == [pages[2].key, pages[3].key]


def test_every_page_follows_its_parent_across_branches():
    trunk = chain(2)
    branch = chain(3, first_token=100)
    # graft the branch below the trunk's last page by rebuilding its entries with that parent
    parent, grafted = trunk[-1].key, []
    for entry in branch:
        key = chain_key(parent, entry.tokens, "")
        grafted.append(PageEntry(key, parent, entry.tokens, ""))
        parent = key
    order = keys(parents_first([*reversed(grafted), *reversed(trunk)]))
    position = {key: i for i, key in enumerate(order)}
    for entry in [*trunk, *grafted]:
        if entry.parent is not None:
            assert position[entry.parent] < position[entry.key]


def test_a_long_chain_needs_no_recursion():
    pages = chain(5000)
    assert keys(parents_first(reversed(pages))) == keys(pages)
