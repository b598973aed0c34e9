"""Attention "cpu_batch_invariant": a query row's output is bitwise the same however its sequence reaches
the kernel: decoded alone (one new token), as any row of a prefill chunk of any size, after a cached
prefix, at any place among other sequences, in a step of any size, with padding.

`test_kernels_backends` checks it against the oracle; here only bit-equality across schedules matters.
One long sequence's K/V sit in shuffled pages; every schedule reads the same pages with the same q rows.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.ragged_paged_attention import cpu_batch_invariant, ragged_paged_attention

HKV, GROUP, D, PAGE = 3, 3, 64, 16  # the default model's geometry
LENGTH = 300  # tokens of the sequence under test; > 256 so the decode kernel would split its context
OTHER = 90  # another sequence's tokens, sharing nothing with it


@pytest.fixture(scope="module")
def pages():
    """(k_pages, v_pages, page-table row of the sequence, of the other one, q of every position [L, Hq, D])."""
    reason = cpu_batch_invariant.check_available("cpu")
    if reason:
        pytest.skip(reason)
    rng = np.random.default_rng(0)
    seq_pages, other_pages = -(-LENGTH // PAGE), -(-OTHER // PAGE)
    num_pages = 1 + seq_pages + other_pages
    order = rng.permutation(num_pages - 1) + 1  # never the sink page 0
    k = rng.standard_normal((2, HKV, num_pages, PAGE, D)).astype(np.float32)
    v = rng.standard_normal((2, HKV, num_pages, PAGE, D)).astype(np.float32)
    q = rng.standard_normal((LENGTH, HKV * GROUP, D)).astype(np.float32)
    return jnp.asarray(k), jnp.asarray(v), order[:seq_pages], order[seq_pages:], jnp.asarray(q)


def _step(pages, pieces, num_rows, num_table_rows=8):
    """Run one step of `pieces`: (page-table row, kv_len after the step, q rows) per sequence, in order.
    -> output rows [T, Hq, D] as numpy."""
    k, v, *_ = pages
    max_pages = -(-LENGTH // PAGE) + 1
    table = np.zeros((num_table_rows, max_pages), np.int32)
    kv_lens = np.zeros(num_table_rows, np.int32)
    cu = np.zeros(num_table_rows + 1, np.int32)
    q = np.zeros((num_rows, HKV * GROUP, D), np.float32)
    for b, (row, kv_len, q_rows) in enumerate(pieces):
        table[b, : len(row)] = row
        kv_lens[b] = kv_len
        q[cu[b] : cu[b] + len(q_rows)] = q_rows
        cu[b + 1] = cu[b] + len(q_rows)
    cu[len(pieces) + 1 :] = cu[len(pieces)]
    run = jax.jit(lambda *a: ragged_paged_attention(*a, implementation="cpu_batch_invariant"))
    return np.asarray(
        run(
            jnp.asarray(q),
            k,
            v,
            jnp.int32(1),
            jnp.asarray(kv_lens),
            jnp.asarray(table),
            jnp.asarray(cu),
            jnp.int32(len(pieces)),
        )
    )


def _chunk(pages, start, end):
    """The sequence's rows start..end-1 as one piece (kv_len = end: the prefix before start is cached)."""
    return (pages[2], end, np.asarray(pages[4][start:end]))


def _other(pages, q_len):
    q = np.random.default_rng(q_len).standard_normal((q_len, HKV * GROUP, D)).astype(np.float32)
    return (pages[3], OTHER, q)


@pytest.fixture(scope="module")
def prefill(pages):
    """Every row of the sequence computed as one whole-prompt chunk, alone: the reference bits."""
    return _step(pages, [_chunk(pages, 0, LENGTH)], num_rows=LENGTH)


@pytest.mark.parametrize("position", [0, 15, 16, 17, 255, 299])
def test_a_decoded_row_equals_the_same_row_of_a_prefill(pages, prefill, position):
    out = _step(pages, [_other(pages, 1), _chunk(pages, position, position + 1), _other(pages, 1)], num_rows=8)
    np.testing.assert_array_equal(out[1], prefill[position])


@pytest.mark.parametrize("cuts", [(0, 1, 300), (0, 100, 101, 300), (0, 17, 64, 250, 299, 300)])
def test_chunked_prefill_rows_equal_the_whole_prompt_rows(pages, prefill, cuts):
    for start, end in zip(cuts, cuts[1:]):
        out = _step(pages, [_chunk(pages, start, end)], num_rows=end - start + 3)
        np.testing.assert_array_equal(out[: end - start], prefill[start:end], err_msg=f"chunk {start}:{end}")


@pytest.mark.parametrize("others_before,others_after,padding", [(1, 0, 0), (3, 2, 5), (0, 4, 37)])
def test_rows_do_not_depend_on_the_other_sequences_or_the_padding(pages, prefill, others_before, others_after, padding):
    before = [_other(pages, 7 * (i + 1)) for i in range(others_before)]
    after = [_other(pages, 1 + 5 * i) for i in range(others_after)]
    pieces = before + [_chunk(pages, 40, 120)] + after
    offset = sum(len(p[2]) for p in before)
    out = _step(pages, pieces, num_rows=sum(len(p[2]) for p in pieces) + padding)
    np.testing.assert_array_equal(out[offset : offset + 80], prefill[40:120])
