"""tools/bench_decode_llamacpp.py's rate: tokens after the first over the time since the first."""

import pytest

from tools.bench_decode_llamacpp import decode_rate


def test_decode_rate_leaves_the_prefill_before_the_first_token_out():
    assert decode_rate([10.0, 10.5, 11.0, 11.5]) == pytest.approx(2.0)


def test_decode_rate_refuses_a_single_token():
    with pytest.raises(ValueError):
        decode_rate([1.0])
