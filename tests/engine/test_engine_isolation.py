"""A request whose share of a step cannot be packed fails alone (engine/isolation.py): the step is retried
without it, every other request completes with the tokens it gets without the poison, the cache stays
intact and no page leaks. Host logic over the fake runner; the real packing code over the tiny model."""

from __future__ import annotations

import asyncio

import pytest

from trellis_jax.engine.api import AsyncEngine, SamplingParams
from trellis_jax.engine.engine import RequestFailed
from trellis_jax.engine.isolation import without_rows
from trellis_jax.step_plan import SequenceWork, StepPlan
from trellis_testing.drive import run_all
from trellis_testing.fakes import FakeRunner, make_fake_engine

GREEDY = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
VICTIMS = {f"v{i}": [10 + i, 20, 30 + 2 * i, 40, 50 + i] for i in range(4)}


class PoisonRunner(FakeRunner):
    """A FakeRunner whose packing fails for any row of a request id starting with 'poison'."""

    def check_plan(self, plan: StepPlan) -> None:
        super().check_plan(plan)
        bad = [w.request_id for w in plan.sequences if w.request_id.startswith("poison")]
        if bad:
            raise OverflowError(f"cannot pack {bad}")

    def run(self, plan: StepPlan):
        self.check_plan(plan)
        return super().run(plan)


def poison_engine(mode: str = "sum", **options):
    runner = PoisonRunner(128, 4, mode=mode)
    return make_fake_engine(num_pages=128, page_size=4, runner=runner, **options)


def assert_idle_and_intact(cache) -> None:
    cache.check_integrity()
    assert cache.num_locked_pages == 0 and cache.num_private_pages == 0


def victims_alone() -> dict:
    engine, *_ = poison_engine()
    for rid, prompt in VICTIMS.items():
        engine.add_request(rid, prompt, GREEDY)
    return {rid: o.outputs[0].token_ids for rid, o in run_all(engine).items()}


@pytest.mark.parametrize("n", [1, 3])
def test_poison_fails_alone_and_the_others_match_their_run_without_it(n):
    engine, _runner, cache, _ = poison_engine()
    for rid, prompt in VICTIMS.items():
        engine.add_request(rid, prompt, GREEDY)
    engine.step()
    engine.add_request("poison", [7, 8, 9], GREEDY.with_updates(n=n))  # joins while the others decode
    outputs = run_all(engine)
    assert {rid: outputs[rid].outputs[0].token_ids for rid in VICTIMS} == victims_alone()
    assert [c.finish_reason for c in outputs["poison"].outputs] == ["abort"] * n
    failures = engine.pop_failures()
    assert list(failures) == ["poison"] and isinstance(failures["poison"], RequestFailed)
    assert "OverflowError" in str(failures["poison"]) and engine.pop_failures() == {}
    assert_idle_and_intact(cache)


def test_a_request_waiting_on_the_poisons_prompt_pages_runs_once_the_poison_fails():
    """The twin shares the poison's prompt, so it waits for the pages the poison computes (inflight
    deferral); the poison fails instead, and the twin must compute them itself and match a clean run."""
    prompt = list(range(1, 15))
    engine, _runner, cache, _ = poison_engine()
    engine.add_request("poison", prompt, GREEDY)
    engine.add_request("twin", prompt, GREEDY)
    outputs = run_all(engine)
    clean, *_ = poison_engine()
    clean.add_request("twin", prompt, GREEDY)
    assert outputs["twin"].outputs[0].token_ids == run_all(clean)["twin"].outputs[0].token_ids
    assert outputs["twin"].outputs[0].finish_reason == "length"
    assert list(engine.pop_failures()) == ["poison"]
    assert_idle_and_intact(cache)


def test_a_step_of_only_poison_is_progress_not_a_stall():
    engine, _runner, cache, _ = poison_engine()
    engine.add_request("poison-a", [1, 2, 3], GREEDY)
    engine.add_request("poison-b", [4, 5, 6], GREEDY)
    outputs = run_all(engine)
    assert set(outputs) == set(engine.pop_failures()) == {"poison-a", "poison-b"}
    assert_idle_and_intact(cache)


def test_poison_admitted_with_a_partial_page_copy_puts_no_uncopied_page_in_the_tree():
    """The poison's first private page is planned as a copy of 3 positions of a cached page; the failed
    step never copies it, so that page must not enter the tree as a tail page (its KV is garbage)."""
    engine, runner, cache, _ = poison_engine()
    engine.add_request("first", [3, 1, 4, 1, 5, 9, 2, 7, 8], SamplingParams(temperature=0, max_tokens=1))
    run_all(engine)
    cached_pages, copies_before = cache.num_evictable_pages, runner.num_page_copies
    poison_prompt = [3, 1, 4, 1, 5, 9, 2, 6, 6]  # shares [5, 9, 2] of the second cached page
    engine.add_request("poison", poison_prompt, GREEDY)
    engine.step()
    assert engine.scheduler.stats.num_partial_page_tokens == 3 and runner.num_page_copies == copies_before
    assert "poison" in engine.pop_failures()
    assert cache.num_evictable_pages == cached_pages
    assert_idle_and_intact(cache)
    engine.add_request("later", poison_prompt, GREEDY)
    later = run_all(engine)["later"].outputs[0].token_ids
    clean, *_ = poison_engine()
    clean.add_request("later", poison_prompt, GREEDY)
    assert later == run_all(clean)["later"].outputs[0].token_ids


def test_a_failure_no_row_explains_still_fails_the_step():
    engine, runner, _cache, _ = poison_engine()
    engine.add_request("a", [1, 2, 3], GREEDY)

    def device_failure(plan):
        raise RuntimeError("device lost")

    runner.run = device_failure
    with pytest.raises(RuntimeError, match="device lost"):
        engine.step()
    assert engine.pop_failures() == {}


def test_abort_all_after_an_unexplained_failure_puts_no_uncopied_page_in_the_tree():
    engine, runner, cache, _ = poison_engine()
    engine.add_request("first", [3, 1, 4, 1, 5, 9, 2, 7, 8], SamplingParams(temperature=0, max_tokens=1))
    run_all(engine)
    cached_pages = cache.num_evictable_pages
    engine.add_request("second", [3, 1, 4, 1, 5, 9, 2, 6, 6], GREEDY)  # admitted with a 3-position page copy

    def device_failure(plan):
        raise RuntimeError("device lost")

    runner.run = device_failure
    with pytest.raises(RuntimeError):
        engine.step()
    engine.abort_all()
    assert cache.num_evictable_pages == cached_pages
    assert_idle_and_intact(cache)


def test_without_rows_drops_their_draft_rows_and_page_copies():
    row = SequenceWork("a", [1], 0, [5], True)
    draft = SequenceWork("a\x00draft0", [2], 1, [5], True)
    other = SequenceWork("b", [3], 0, [6], True)
    plan = StepPlan([row, draft, other], [(9, 5), (9, 6)])
    left = without_rows(plan, {"a"})
    assert [w.request_id for w in left.sequences] == ["b"] and left.page_copies == [(9, 6)]


def test_async_stream_of_the_poison_raises_and_the_others_complete():
    inner, _runner, cache, tokenizer = poison_engine(mode="increment")
    engine = AsyncEngine(inner, tokenizer)

    async def text(prompt, rid):
        return "".join([d.text async for d in engine.generate(prompt, GREEDY, rid)])

    async def main():
        return await asyncio.gather(text("abc", "x"), text("a", "poison"), text("klm", "y"), return_exceptions=True)

    try:
        x, poison, y = asyncio.run(main())
    finally:
        engine.shutdown()
    assert (x, y) == ("defghi", "nopqrs")
    assert isinstance(poison, RequestFailed) and "could not run" in str(poison)
    assert_idle_and_intact(cache)
