"""Property-based: any interleaving of adds, steps and aborts keeps the pool consistent and the outputs right."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trellis_jax.scheduler import RequestRejected

PREFIXES = ([7] * 9, [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5], [2] * 17)

operation = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 2), st.integers(0, 12), st.integers(1, 20), st.integers(1, 12)),
    st.tuples(st.just("step")),
    st.tuples(st.just("abort"), st.integers(0, 40)),
)


def oracle(prompt, count):
    sequence = list(prompt)
    for _ in range(count):
        sequence.append(sum(sequence) % 258)
    return sequence[len(prompt) :]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(operation, max_size=40),
    num_pages=st.integers(6, 30),
    policy=st.sampled_from(["lpm", "fcfs", "dfs-weight"]),
    enabled=st.booleans(),
)
def test_random_interleavings_keep_invariants(harness, ops, num_pages, policy, enabled):
    h = harness(
        num_pages=num_pages,
        page_size=4,
        max_num_batched_tokens=12,
        max_num_seqs=4,
        schedule_policy=policy,
        enable_prefix_cache=enabled,
    )
    prompts, aborted = {}, set()
    for op in ops:
        if op[0] == "add":
            _, prefix, cut, extra, max_tokens = op
            request_id = f"r{len(prompts)}"
            prompts[request_id] = PREFIXES[prefix][:cut] + [extra] * (1 + extra % 3)
            try:
                h.add(request_id, prompts[request_id], max_tokens=max_tokens)
            except RequestRejected:
                aborted.add(request_id)
        elif op[0] == "step" and h.scheduler.has_unfinished():
            h.step()
        elif op[0] == "abort" and h.scheduler.abort(f"r{op[1]}"):
            aborted.add(f"r{op[1]}")
    h.run()
    assert set(h.finished) == set(prompts) - aborted
    for request_id, (tokens, _) in h.finished.items():
        assert tokens == oracle(prompts[request_id], len(tokens))
    assert h.all_pages_back()
