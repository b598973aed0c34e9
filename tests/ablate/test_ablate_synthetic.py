"""Synthetic traces and named workloads: deterministic, and shaped as their parameters say."""

from collections import Counter

import numpy as np
import pytest

from trellis_jax.ablate.synthetic import SyntheticSpec, generate
from trellis_jax.ablate.trace import TraceError
from trellis_jax.ablate.workloads import WORKLOADS, workload


def test_same_spec_same_trace():
    a, b = generate(SyntheticSpec(num_requests=50, seed=3)), generate(SyntheticSpec(num_requests=50, seed=3))
    assert all(
        np.array_equal(x.prompt, y.prompt) and np.array_equal(x.output, y.output)
        for x, y in zip(a.requests, b.requests)
    )


def test_request_count_is_exact():
    assert len(generate(SyntheticSpec(num_requests=37, branching=4, burst_every=5, burst_size=3))) == 37


def test_next_turn_extends_prompt_and_reply():
    trace = generate(SyntheticSpec(num_requests=6, concurrent_sessions=1, turns=6, fixed_turns=True))
    for prev, cur in zip(trace.requests, trace.requests[1:]):
        history = np.concatenate([prev.prompt, prev.output])
        assert np.array_equal(cur.prompt[: len(history)], history)


def test_branches_share_the_history_and_differ_after_it():
    trace = generate(SyntheticSpec(num_requests=3, concurrent_sessions=1, branching=3, prefix_len=32))
    a, b, c = trace.requests
    assert np.array_equal(a.prompt[:16], b.prompt[:16]) and np.array_equal(b.prompt[:16], c.prompt[:16])
    assert not np.array_equal(a.prompt[-8:], b.prompt[-8:])


def test_bursts_are_one_off_long_prompts():
    spec = SyntheticSpec(
        num_requests=40,
        burst_every=10,
        burst_size=2,
        burst_len=500,
        prefix_len=16,
        user_len=8,
        output_len=8,
        turns=1,
        fixed_turns=True,
    )
    long_prompts = [r for r in generate(spec).requests if r.prompt_len >= 250]
    assert len(long_prompts) == 6  # bursts start at requests 10, 22 and 34
    tokens = np.concatenate([r.prompt for r in long_prompts])
    assert len(np.unique(tokens)) == len(tokens)


def test_zipf_makes_the_first_prefix_the_most_popular():
    spec = SyntheticSpec(num_requests=400, num_prefixes=8, prefix_len=8, zipf_alpha=1.5, turns=1, fixed_turns=True)
    firsts = Counter(int(r.prompt[0]) for r in generate(spec).requests)
    ranked = [token for token, _ in firsts.most_common()]
    assert ranked[0] == 0  # prefix 0 starts at token id 0


def test_tenants_get_their_own_namespaces():
    trace = generate(SyntheticSpec(num_requests=30, num_tenants=3))
    assert {r.namespace for r in trace.requests} == {"t0", "t1", "t2"}


def test_vocab_size_bounds_token_ids():
    trace = generate(SyntheticSpec(num_requests=20, vocab_size=100))
    assert max(int(r.prompt.max()) for r in trace.requests) < 100


def test_arrival_rate_gives_increasing_times():
    times = [r.arrival_time for r in generate(SyntheticSpec(num_requests=20, arrival_rate=5.0)).requests]
    assert all(a <= b for a, b in zip(times, times[1:])) and times[0] > 0


def test_bad_spec_is_rejected():
    with pytest.raises(TraceError, match="branching"):
        SyntheticSpec(branching=0)


@pytest.mark.parametrize("name", WORKLOADS)
def test_named_workloads_generate(name):
    trace = workload(name, scale=0.05)
    assert len(trace) >= 1 and trace.name == name
