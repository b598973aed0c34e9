"""PageAllocator: page 0 reserved, exact counts, errors that change nothing."""

import pytest

from trellis_jax.cache import OutOfPagesError, PageAllocator


def test_page_zero_is_never_handed_out():
    allocator = PageAllocator(9)
    pages = allocator.alloc(8)
    assert sorted(pages) == list(range(1, 9))
    assert allocator.num_free == 0


def test_alloc_beyond_free_raises_and_changes_nothing():
    allocator = PageAllocator(5)
    allocator.alloc(2)
    with pytest.raises(OutOfPagesError, match="asked for 3 pages, 2 free"):
        allocator.alloc(3)
    assert allocator.num_free == 2 and allocator.num_allocated == 2


def test_freed_pages_are_reused():
    allocator = PageAllocator(4)
    pages = allocator.alloc(3)
    allocator.free(pages[:1])
    assert allocator.alloc(1) == pages[:1]


@pytest.mark.parametrize("bad", [[0], [7], [99], [-1], ["1"]])
def test_free_of_a_page_not_allocated_is_rejected(bad):
    allocator = PageAllocator(8)
    allocator.alloc(3)
    with pytest.raises(ValueError):
        allocator.free(bad)
    assert allocator.num_allocated == 3


def test_double_free_frees_nothing():
    allocator = PageAllocator(8)
    a, b = allocator.alloc(2)
    with pytest.raises(ValueError, match="duplicate"):
        allocator.free([a, a])
    allocator.free([a])
    with pytest.raises(ValueError):
        allocator.free([b, a])
    assert allocator.is_allocated(b) and not allocator.is_allocated(a)


@pytest.mark.parametrize("num_pages", [0, 1, 2.5, None])
def test_pool_needs_at_least_one_usable_page(num_pages):
    with pytest.raises(ValueError):
        PageAllocator(num_pages)


def test_negative_alloc_is_rejected():
    with pytest.raises(ValueError):
        PageAllocator(4).alloc(-1)
