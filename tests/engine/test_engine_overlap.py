"""The overlapped engine loop (Engine(overlap=True)) gives what the synchronous loop gives: the same tokens,
finish reasons, logprobs and cached counts, and a cache that ends intact with nothing locked or private.

Host logic over the fake runner ("sum" mode reads every token back through the page table, so a placeholder
that reached the KV, a page freed too early or a wrong page published changes the output)."""

from __future__ import annotations

import pytest

from trellis_jax.engine.api import SamplingParams
from trellis_jax.scheduler.scheduler import DRAFT_MARK
from trellis_jax.step_plan import PENDING_TOKEN, StepPlan
from trellis_testing.drive import run_all, run_streaming
from trellis_testing.fakes import FakeRunner, make_fake_engine

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
SHARED = [1, 2, 3, 4, 5, 6, 7]


class RecordingRunner(FakeRunner):
    """A FakeRunner that keeps every plan it ran."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.plans: list[StepPlan] = []

    def run(self, plan: StepPlan):
        self.plans.append(plan)
        return super().run(plan)


def drive(overlap: bool, requests, *, num_pages=48, abort_after: dict | None = None, mode="sum", **options):
    """Run `requests` [(id, prompt, SamplingParams)] to the end; abort_after {id: k} aborts a request once
    k of its tokens were streamed. -> ({id: [(tokens, finish reason, logprobs, cached)]}, runner)."""
    runner = RecordingRunner(num_pages, 4, mode=mode, max_num_tokens=64, max_num_seqs=8)
    engine, _, cache, _ = make_fake_engine(
        num_pages=num_pages, page_size=4, overlap=overlap, runner=runner, max_num_batched_tokens=64, **options
    )
    outputs = run_streaming(engine, requests, abort_after=abort_after, each_step=cache.check_integrity)
    assert cache.num_locked_pages == 0 and cache.num_private_pages == 0
    summary = {
        rid: [(c.token_ids, c.finish_reason, c.logprobs, c.num_cached_tokens) for c in out.outputs]
        for rid, out in outputs.items()
    }
    return summary, runner


def batch(n: int = 6, params: SamplingParams = GREEDY):
    return [(f"r{i}", SHARED + [10 + i, 20 + i], params) for i in range(n)]


def assert_same(requests, **options):
    sync, _ = drive(False, requests, **options)
    overlapped, runner = drive(True, requests, **options)
    assert overlapped == sync
    return runner


@pytest.mark.parametrize("cache", [True, False])
def test_greedy_outputs_match_with_the_cache_on_and_off(cache):
    runner = assert_same(batch(), enable_prefix_cache=cache)
    assert any(PENDING_TOKEN in w.token_ids for p in runner.plans for w in p.sequences)  # it did overlap


def test_n_completions_match():
    assert_same([("multi", SHARED + [9], GREEDY.with_updates(n=3)), *batch(3)])


def test_stop_token_ids_and_stop_strings_end_at_the_same_token():
    sync, _ = drive(False, batch(1, GREEDY))
    tokens = sync["r0"][0][0]
    stop_id = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop_token_ids=(tokens[4],))
    stop_text = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop=(bytes([tokens[3] % 128]).decode(),))
    assert_same([("id", SHARED + [10, 20], stop_id), ("text", SHARED + [10, 20], stop_text), *batch(3)])


def test_a_request_that_stops_early_computes_one_unseen_token_and_frees_its_pages():
    first = drive(False, batch(1))[0]["r0"][0][0]
    params = GREEDY.with_updates(stop_token_ids=(first[1],))
    outputs, runner = drive(True, [("r0", SHARED + [10, 20], params)])
    assert outputs["r0"][0][0] == first[:2] and outputs["r0"][0][1] == "stop"
    assert len(runner.plans) == 3  # the prefill samples first[0], a decode first[1], then one never emitted


def test_abort_mid_stream_matches():
    assert_same(batch(), abort_after={"r1": 3, "r4": 5})


def test_preemption_under_page_pressure_matches():
    long = GREEDY.with_updates(max_tokens=24)
    assert_same(batch(6, long), num_pages=20, enable_prefix_cache=True)


def test_max_tokens_one_and_the_context_cap_schedule_no_row_past_them():
    requests = [("one", SHARED + [10], GREEDY.with_updates(max_tokens=1)), ("capped", SHARED, GREEDY)]
    sync, _ = drive(False, requests, max_model_len=12)
    overlapped, runner = drive(True, requests, max_model_len=12)
    assert overlapped == sync
    assert max(w.kv_len for p in runner.plans for w in p.sequences) <= 12


def test_seeds_logprobs_and_penalties_match():
    seeded = SamplingParams(temperature=0.8, seed=7, max_tokens=10, ignore_eos=True, logprobs=2)
    penalised = GREEDY.with_updates(frequency_penalty=0.5)
    assert_same([("seeded", SHARED + [3], seeded), ("penalised", SHARED + [4], penalised), *batch(2)])


def test_prompt_lookup_steps_run_synchronously_and_match():
    echo = [1, 2, 3, 4, 5, 1, 2, 3]  # "increment" continues 4, 5, 6: the lookup guesses 4, 5, 1
    runner = assert_same([("echo", echo, GREEDY), *batch(2)], num_lookup_tokens=3, mode="increment")
    drafts = [p for p in runner.plans if any(DRAFT_MARK in w.request_id for w in p.sequences)]
    assert drafts and not any(PENDING_TOKEN in w.token_ids for p in drafts for w in p.sequences)


def test_requests_arriving_while_a_step_is_in_flight_match():
    def staggered(overlap):
        runner = FakeRunner(48, 4, max_num_tokens=64, max_num_seqs=8)
        engine, _, cache, _ = make_fake_engine(num_pages=48, page_size=4, overlap=overlap, runner=runner)
        outputs = {}
        for rid, prompt, params in batch():
            engine.add_request(rid, prompt, params)
            engine.step()
        outputs.update(run_all(engine))
        cache.check_integrity()
        return {rid: out.outputs[0].token_ids for rid, out in outputs.items()}

    assert staggered(True) == staggered(False)


def test_overlap_needs_a_runner_that_can_dispatch():
    class RunOnly:
        def run(self, plan):  # pragma: no cover - never called
            raise AssertionError

    with pytest.raises(ValueError, match="dispatch"):
        make_fake_engine(overlap=True, runner=RunOnly())


def test_a_row_that_cannot_be_packed_fails_alone_while_others_overlap():
    from test_engine_isolation import GREEDY as SHORT
    from test_engine_isolation import VICTIMS, PoisonRunner, victims_alone

    runner = PoisonRunner(128, 4)
    engine, _, cache, _ = make_fake_engine(num_pages=128, page_size=4, runner=runner, overlap=True)
    for rid, prompt in VICTIMS.items():
        engine.add_request(rid, prompt, SHORT)
    engine.step()
    engine.add_request("poison", [7, 8, 9], SHORT)  # joins while the others' tokens are in flight
    outputs = run_all(engine)
    assert {rid: outputs[rid].outputs[0].token_ids for rid in VICTIMS} == victims_alone()
    assert outputs["poison"].outputs[0].finish_reason == "abort" and list(engine.pop_failures()) == ["poison"]
    cache.check_integrity()
    assert cache.num_locked_pages == 0 and cache.num_private_pages == 0


@pytest.mark.parametrize(("flag", "value"), [("auto", None), ("on", True), ("off", False)])
def test_the_overlap_flag_sets_the_config(flag, value):
    import argparse

    from trellis_jax.engine.flags import add_engine_flags, engine_config

    parser = argparse.ArgumentParser()
    add_engine_flags(parser)
    assert engine_config(parser.parse_args(["--overlap", flag])).overlap is value


def test_auto_overlaps_on_an_accelerator_only():
    from trellis_jax.engine.builder import overlap_by_default

    class Accelerated(FakeRunner):
        platform = "gpu"

    assert overlap_by_default(Accelerated(8, 4)) and not overlap_by_default(FakeRunner(8, 4))


def test_an_id_aborted_and_reused_while_its_token_is_in_flight_gets_only_its_own_tokens():
    def reuse(overlap):
        engine, _, cache, _ = make_fake_engine(num_pages=48, page_size=4, overlap=overlap)
        engine.add_request("r", SHARED + [10], GREEDY)
        engine.step()
        engine.step()
        engine.abort("r")
        engine.add_request("r", [40, 41, 42], GREEDY)  # the old r's last token may still be in flight
        outputs = run_all(engine)
        cache.check_integrity()
        return outputs["r"].outputs[0].token_ids

    assert reuse(True) == reuse(False)
