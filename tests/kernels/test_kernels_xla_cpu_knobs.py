"""The XLA CPU path against the numpy oracle at non-default tuning knobs, in float32 (1e-5 relative).

`test_kernels_backends` checks every backend at its default knobs; this file moves the knobs that
decide the xla path's loop structure, so a change to its chunking cannot pass only because the default
chunk happens to cover a case: decode chunks of 1 page (many online-softmax steps), 3 pages (the last
chunk partial) and 64 pages (one chunk longer than every context); prefill tiles of a few rows that
split sequences; tiles wider than every short sequence (a tail tile slides back over its neighbours'
rows and must leave them alone); decode and extend rows in one batch (the two strategies write disjoint rows);
sliding-window decode that skips whole chunks; soft-capped GQA decode. Shapes follow the default model
(3 kv heads, GQA 3, head_dim 64, page 16); pages nobody owns are poisoned (kernels_testlib).
"""

import pytest
from kernels_testlib import SMOLLM, Case, assert_close, run_against_oracle

DECODE = Case("decode_ragged", q_lens=(1,) * 5, kv_lens=(1, 17, 48, 100, 161), extra_seqs=2, **SMOLLM)
MIXED = Case("decode_and_extend", q_lens=(1, 20, 1, 5, 0), kv_lens=(70, 40, 33, 90, 12), **SMOLLM)
WINDOW = Case("decode_sliding_window", q_lens=(1, 1, 1), kv_lens=(200, 50, 5), sliding_window=20, **SMOLLM)
SHORT_EXTENDS = Case(
    "short_extends_behind_a_long_one",
    q_lens=(40, 3, 1, 7, 2, 5),
    kv_lens=(40, 60, 9, 7, 130, 21),
    extra_seqs=1,
    **SMOLLM,
)
SOFT_CAP = Case("decode_soft_cap", q_lens=(1, 1, 3), kv_lens=(130, 7, 64), soft_cap=2.0, **SMOLLM)


def run_xla(case, **knobs):
    return run_against_oracle(case, "xla", **knobs)


@pytest.mark.parametrize("chunk_pages", [1, 3, 64])
def test_decode_rows_match_oracle_for_any_chunk_size(chunk_pages):
    out, expected = run_xla(DECODE, decode_chunk_pages=chunk_pages)
    assert_close(out, expected, "float32")


def test_decode_and_extend_rows_in_one_batch_match_oracle_with_small_prefill_blocks():
    out, expected = run_xla(MIXED, decode_chunk_pages=2, prefill_chunk_tokens=32, prefill_tile_rows=8)
    assert_close(out, expected, "float32")


@pytest.mark.parametrize("tile_rows", [4, 32, 128])
def test_short_extend_sequences_match_oracle_for_any_tile_size(tile_rows):
    out, expected = run_xla(SHORT_EXTENDS, prefill_chunk_tokens=32, prefill_tile_rows=tile_rows)
    assert_close(out, expected, "float32")


@pytest.mark.parametrize("chunk_pages", [1, 4])
def test_sliding_window_decode_matches_oracle(chunk_pages):
    out, expected = run_xla(WINDOW, decode_chunk_pages=chunk_pages)
    assert_close(out, expected, "float32")


def test_soft_capped_gqa_decode_matches_oracle():
    out, expected = run_xla(SOFT_CAP, decode_chunk_pages=2, prefill_tile_rows=2)
    assert_close(out, expected, "float32")
