"""Continuous batching and chunked prefill."""

import subprocess
import sys


def test_scheduler_and_api_import_no_jax():
    code = (
        "import sys, trellis_jax.scheduler, trellis_jax.engine.api, trellis_testing.fakes; "
        "sys.exit(1 if 'jax' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_every_step_stays_within_the_token_budget(harness):
    h = harness(max_num_batched_tokens=16)
    for i in range(5):
        h.add(f"r{i}", range(100 * i, 100 * i + 37), max_tokens=3)
    h.run()
    assert all(p.num_tokens <= 16 for p in h.plans)
    assert len(h.finished) == 5


def test_long_prompt_does_not_stall_a_running_decode(harness):
    h = harness(max_num_batched_tokens=8)
    h.add("short", [1, 2, 3], max_tokens=20)
    h.step()  # "short" prefilled, decoding from now on
    h.add("long", range(10, 90), max_tokens=1)
    while "long" not in h.finished:
        plan, _ = h.step()
        ids = [s.request_id for s in plan.sequences]
        assert "short" in ids or "short" in h.finished
    long_chunks = [s for p in h.plans for s in p.sequences if s.request_id == "long"]
    assert len(long_chunks) >= 80 // 8  # the 80-token prompt went through in chunks


def test_chunks_resume_where_the_previous_one_stopped(harness):
    h = harness(max_num_batched_tokens=8)
    h.add("a", range(1, 30), max_tokens=1)
    h.run()
    starts = [(s.start_pos, len(s.token_ids)) for p in h.plans for s in p.sequences]
    position = 0
    for start, length in starts:
        assert start == position
        position += length
    assert position == 29


def test_max_num_seqs_bounds_the_batch(harness):
    h = harness(max_num_seqs=2, max_num_batched_tokens=64)
    for i in range(5):
        h.add(f"r{i}", [i + 1] * 5, max_tokens=4)
    h.run()
    assert max(len(p.sequences) for p in h.plans) <= 2
    assert len(h.finished) == 5


def test_stop_token_id_ends_with_stop(harness):
    h = harness()
    # FakeRunner "sum": next = sum(context) % 258; prompt [5] -> 5, then 10, 20, 40 ...
    h.add("a", [5], max_tokens=10, stop_token_ids=[20])
    h.run()
    assert h.finished["a"] == ([5, 10, 20], "stop")


def test_max_tokens_ends_with_length(harness):
    h = harness()
    h.add("a", [5], max_tokens=2)
    h.run()
    assert h.finished["a"] == ([5, 10], "length")


def test_context_length_cap_ends_with_length(harness):
    h = harness(max_model_len=8)
    h.add("a", [1, 2, 3, 4, 5], max_tokens=100)
    h.run()
    tokens, reason = h.finished["a"]
    assert reason == "length" and 5 + len(tokens) == 8


def _first_step_ids(h):
    plan, _ = h.step()
    return [s.request_id for s in plan.sequences]


def test_a_saturated_step_admits_no_second_prefill(harness):
    h = harness(max_num_batched_tokens=512, prefill_saturation_tokens=64)
    h.add("a", range(1, 101), max_tokens=3)
    h.add("b", range(201, 301), max_tokens=3)
    assert _first_step_ids(h) == ["a"]
    plan, _ = h.step()
    assert sorted((s.request_id, len(s.token_ids)) for s in plan.sequences) == [("a", 1), ("b", 100)]


def test_small_prefills_share_a_step_until_the_saturation_point(harness):
    h = harness(max_num_batched_tokens=512, prefill_saturation_tokens=64)
    for i in range(4):
        h.add(f"r{i}", range(100 * i + 1, 100 * i + 31), max_tokens=2)  # 30 tokens each
    assert _first_step_ids(h) == ["r0", "r1", "r2"]  # 30, 60 (< 64: admit one more), 90


def test_without_a_saturation_point_every_prefill_that_fits_is_admitted(harness):
    h = harness(max_num_batched_tokens=512)
    h.add("a", range(1, 101), max_tokens=3)
    h.add("b", range(201, 301), max_tokens=3)
    assert sorted(_first_step_ids(h)) == ["a", "b"]


def test_the_saturation_point_does_not_hold_back_running_work(harness):
    h = harness(max_num_batched_tokens=40, prefill_saturation_tokens=8)
    h.add("long", range(1, 101), max_tokens=2)
    h.step()  # the first 40-token chunk
    plan, _ = h.step()
    assert [(s.request_id, len(s.token_ids)) for s in plan.sequences] == [("long", 40)]  # a continuation
    h.run()
    assert h.finished["long"][1] == "length"


def test_a_bad_saturation_point_is_refused():
    import pytest

    from trellis_jax.scheduler import SchedulerConfig

    with pytest.raises(ValueError, match="prefill_saturation_tokens"):
        SchedulerConfig(prefill_saturation_tokens=0)
