"""The scheduler's cumulative histogram (queue times), in Prometheus semantics."""

from __future__ import annotations

import pytest

from trellis_jax.scheduler.stats import Histogram


def test_each_bucket_counts_the_observations_at_or_below_its_bound():
    histogram = Histogram((0.1, 1.0, 10.0))
    for value in (0.05, 0.1, 0.5, 20.0):
        histogram.observe(value)
    assert histogram.counts == [2, 3, 3]
    assert (histogram.count, histogram.sum) == (4, pytest.approx(20.65))


def test_bounds_must_increase():
    with pytest.raises(ValueError, match="strictly increasing"):
        Histogram((1.0, 0.5))
