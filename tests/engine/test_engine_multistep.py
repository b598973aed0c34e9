"""Multi-step decode (decode_steps k > 1) gives what one token per step gives: the same tokens, finish
reasons, logprobs and cached counts, overlapped or not, with a cache that ends intact and nothing locked or
private; and the scheduler plans multi-step only where it may, with each row's steps capped.

Host logic over the fake runner ("sum" mode reads every token back through the page table, so a token
kept past a page the row did not hold, a page freed too early or a wrong page published changes the output).
k = 5 with 4-token pages: every multi-step crosses page boundaries at varying offsets."""

from __future__ import annotations

import pytest

from trellis_jax.engine.api import SamplingParams
from trellis_jax.step_plan import StepPlan
from trellis_testing.drive import run_streaming
from trellis_testing.fakes import FakeRunner, make_fake_engine

K = 5
GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)  # 12: not a multiple of K
SHARED = [1, 2, 3, 4, 5, 6, 7]


class RecordingRunner(FakeRunner):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.plans: list[StepPlan] = []

    def run(self, plan: StepPlan):
        self.plans.append(plan)
        return super().run(plan)


def drive(steps: int, requests, *, overlap=False, num_pages=48, abort_after=None, mode="sum", **options):
    """({id: [(tokens, finish reason, logprobs, cached)]}, runner) after running `requests` to the end;
    abort_after {id: k} aborts a request once at least k of its tokens were streamed."""
    runner = RecordingRunner(num_pages, 4, mode=mode, max_num_tokens=64, max_num_seqs=8)
    engine, _, cache, _ = make_fake_engine(
        num_pages=num_pages,
        page_size=4,
        overlap=overlap,
        runner=runner,
        max_num_batched_tokens=64,
        decode_steps=steps,
        **options,
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
    single, _ = drive(1, requests, **options)
    for overlap in (False, True):
        multi, runner = drive(K, requests, overlap=overlap, **options)
        assert multi == single
        assert any(p.decode_steps == K for p in runner.plans)  # it did run multi-step
    return single


@pytest.mark.parametrize("cache", [True, False])
def test_greedy_outputs_match_with_the_cache_on_and_off(cache):
    outputs = assert_same(batch(), enable_prefix_cache=cache)
    assert all(len(o[0][0]) == 12 for o in outputs.values())


def test_n_completions_match():
    assert_same([("multi", SHARED + [9], GREEDY.with_updates(n=3)), *batch(3)])


def test_stop_token_ids_and_stop_strings_end_at_the_same_token():
    tokens = drive(1, batch(1))[0]["r0"][0][0]
    stop_id = GREEDY.with_updates(stop_token_ids=(tokens[4],))
    stop_text = GREEDY.with_updates(stop=(bytes([tokens[3] % 128]).decode(),))
    outputs = assert_same([("id", SHARED + [10, 20], stop_id), ("text", SHARED + [10, 20], stop_text), *batch(3)])
    assert outputs["id"][0][1] == "stop" and outputs["id"][0][0][-1] == tokens[4]


def test_preemption_under_page_pressure_matches():
    assert_same(batch(6, GREEDY.with_updates(max_tokens=24)), num_pages=20)


def test_context_cap_matches():
    assert_same(
        [("capped", SHARED, GREEDY), ("one", SHARED + [10], GREEDY.with_updates(max_tokens=1))], max_model_len=15
    )


def test_seeds_and_logprobs_match():
    seeded = SamplingParams(temperature=0.8, seed=7, max_tokens=10, ignore_eos=True, logprobs=2)
    assert_same([("seeded", SHARED + [3], seeded), *batch(2)])


def test_abort_mid_stream_keeps_a_prefix_and_frees_everything():
    full, _ = drive(1, batch())
    aborted, _ = drive(K, batch(), abort_after={"r1": 3, "r4": 5})
    for rid in ("r1", "r4"):
        tokens, reason, _, _ = aborted[rid][0]
        assert reason == "abort" and full[rid][0][0][: len(tokens)] == tokens
    assert {r: aborted[r] for r in ("r0", "r2", "r3", "r5")} == {r: full[r] for r in ("r0", "r2", "r3", "r5")}


def test_steps_holding_a_penalised_row_run_one_step_at_a_time():
    penalised = GREEDY.with_updates(frequency_penalty=0.5)
    outputs, runner = drive(K, [("p", SHARED, penalised), *batch(2)])
    assert outputs == drive(1, [("p", SHARED, penalised), *batch(2)])[0]
    assert all(p.decode_steps == 1 for p in runner.plans if any(w.request_id == "p" for w in p.sequences))


@pytest.mark.parametrize("steps", [0, -1, True, 2.0])
def test_decode_steps_must_be_a_positive_int(steps):
    from trellis_jax.engine.config import EngineConfig
    from trellis_jax.scheduler import SchedulerConfig

    with pytest.raises(ValueError, match="decode_steps"):
        SchedulerConfig(decode_steps=steps)
    with pytest.raises(ValueError, match="decode_steps"):
        EngineConfig(decode_steps=steps)


def test_the_decode_steps_flag_sets_the_config():
    import argparse

    from trellis_jax.engine.flags import add_engine_flags, engine_config

    parser = argparse.ArgumentParser()
    add_engine_flags(parser)
    assert engine_config(parser.parse_args(["--decode-steps", "8"])).decode_steps == 8
    assert engine_config(parser.parse_args([])).decode_steps == 1
