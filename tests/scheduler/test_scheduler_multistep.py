"""The scheduler's multi-step plans (SchedulerConfig.decode_steps): only plain decode steps with nobody
waiting become multi-step, each row's steps are capped by its max_tokens, its context and the pages it
can get without preempting, pages are grown ahead, and commit keeps each row's tokens in order."""

from __future__ import annotations

import pytest

from trellis_jax.step_plan import StepOutputs

K = 5
SHARED = [1, 2, 3, 4, 5, 6, 7]


def test_a_waiting_request_caps_the_step_to_one(harness):
    h = harness(decode_steps=K, max_num_seqs=1)
    h.add("a", SHARED, max_tokens=12)
    h.step()  # a's prefill
    h.add("b", SHARED + [9], max_tokens=12)  # waits: one sequence slot
    plan, _ = h.step()
    assert plan.decode_steps == 1


def test_each_row_is_capped_by_its_max_tokens(harness):
    h = harness(decode_steps=K)
    h.add("short", SHARED, max_tokens=3)
    h.add("long", [9] + SHARED, max_tokens=12)  # no page in common: neither waits for the other
    h.step()  # the prefills sample one token each
    plan, events = h.step()
    steps = {w.request_id: w.num_steps for w in plan.sequences}
    assert plan.decode_steps == K and steps == {"short": 2, "long": K}
    assert h.finished["short"][1] == "length" and len(h.outputs["short"]) == 3 and len(h.outputs["long"]) == 1 + K


def test_pages_are_grown_ahead_for_every_step(harness):
    h = harness(decode_steps=K)
    h.add("a", SHARED, max_tokens=12)  # 7 prompt tokens: kv 8 after the first decode, steps write 8..11
    h.step()
    plan, _ = h.step()
    (work,) = plan.sequences
    assert work.num_steps == K and len(work.page_ids) * 4 >= work.kv_len + K - 1


def test_short_of_pages_the_steps_are_capped_without_preempting(harness):
    h = harness(decode_steps=K, num_pages=4, enable_prefix_cache=False)  # pages 1..3: 12 positions
    h.add("a", SHARED, max_tokens=12)
    h.run()
    assert h.scheduler.stats.num_preemptions == 0
    assert h.finished["a"][1] == "length" and len(h.outputs["a"]) == 12 - len(SHARED) + 1  # context of 12 - ...
    assert max(w.kv_len + w.num_steps - 1 for p in h.plans for w in p.sequences) <= 12


def test_the_runner_must_return_every_kept_token(harness):
    h = harness(decode_steps=K)
    h.add("a", SHARED, max_tokens=12)
    h.step()
    plan = h.scheduler.schedule()
    only_first = StepOutputs(h.runner.run(plan).tokens)
    with pytest.raises(ValueError, match="tokens for row"):
        h.scheduler.commit(plan, only_first)
