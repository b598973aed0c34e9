"""Bucket selection: smallest fitting shape, every selectable shape is compiled, clear overflow errors."""

from __future__ import annotations

import itertools

import pytest

from trellis_jax.runner.buckets import Bucket, BucketOverflowError, BucketSet, powers_of_two, prefill_friendly

BUCKETS = BucketSet(token_buckets=(4, 16, 64), seq_buckets=(1, 8, 32), page_buckets=(2, 8))


def test_select_returns_the_smallest_fitting_bucket():
    assert BUCKETS.select(3, 1, 1) == Bucket(4, 8, 2)
    assert BUCKETS.select(17, 2, 5) == Bucket(64, 32, 8)


def test_decode_steps_get_as_many_sequence_rows_as_tokens():
    decode = BucketSet(token_buckets=(2, 8, 32, 128), seq_buckets=(1, 2, 8, 32), page_buckets=(4,))
    assert [decode.select(n, n, 1).num_seqs for n in (1, 2, 5, 8, 20, 32)] == [2, 2, 8, 8, 32, 32]
    assert decode.select(100, 1, 1) == Bucket(128, 32, 4)


def test_one_compiled_shape_per_token_and_page_bucket():
    assert len(BUCKETS.all()) == 3 * 2


def test_every_selectable_bucket_is_listed_for_warmup():
    listed = set(BUCKETS.all())
    for tokens, seqs, pages in itertools.product(range(1, 65), range(1, 33), range(1, 9)):
        if seqs <= tokens:
            assert BUCKETS.select(tokens, seqs, pages) in listed


def test_listed_buckets_are_all_selectable():
    selected = {
        BUCKETS.select(tokens, seqs, pages)
        for tokens, seqs, pages in itertools.product(range(1, 65), range(1, 33), range(1, 9))
        if seqs <= tokens
    }
    assert selected == set(BUCKETS.all())


@pytest.mark.parametrize(
    "tokens, seqs, pages, limit",
    [(65, 1, 1, "max_num_tokens = 64"), (64, 33, 1, "max_num_seqs = 32"), (4, 1, 9, "max_pages_per_seq = 8")],
)
def test_oversized_step_names_the_limit(tokens, seqs, pages, limit):
    with pytest.raises(BucketOverflowError, match=limit):
        BUCKETS.select(tokens, seqs, pages)


def test_more_sequences_than_tokens_is_rejected():
    with pytest.raises(ValueError, match="1 token per sequence"):
        BUCKETS.select(2, 3, 1)


def test_seq_bucket_larger_than_token_bucket_is_rejected():
    with pytest.raises(ValueError, match="exceeds largest token bucket"):
        BucketSet((4,), (8,), (1,))


def test_powers_of_two_end_at_the_limit():
    assert powers_of_two(8, 100) == (8, 16, 32, 64, 100)
    assert powers_of_two(1, 4) == (1, 2, 4)


def test_prefill_friendly_buckets_are_four_per_octave_above_128():
    assert prefill_friendly(8, 512) == (8, 16, 32, 64, 128, 160, 192, 224, 256, 320, 384, 448, 512)
    assert prefill_friendly(8, 300) == (8, 16, 32, 64, 128, 160, 192, 224, 256, 300)
    assert prefill_friendly(8, 64) == (8, 16, 32, 64)


def test_prefill_friendly_pads_a_step_by_at_most_a_quarter_above_128():
    buckets = prefill_friendly(2, 1024)
    for tokens in range(129, 1025):
        padded = min(b for b in buckets if b >= tokens)
        assert padded - tokens < padded / 4, (tokens, padded)


def test_prefill_friendly_refuses_an_empty_range():
    with pytest.raises(ValueError, match="need 1 <= low <= high"):
        prefill_friendly(64, 8)
