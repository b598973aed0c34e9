"""Multi-step decode on the real runner (tiny Llama): greedy outputs with decode_steps=8 equal those with
decode_steps=1 (overlap on and off) across the engine workloads, the cache ends intact, multi-step plans
did run, and nothing compiles after warm-up.

One batch-invariant runner warmed up with decode_steps=8 (a row's floats do not depend on the rest of the
step, nor on whether it runs in a multi-step program), a small KV pool so that the long workload preempts.
Each run takes a fresh engine over it."""

from __future__ import annotations

import pytest

from trellis_jax.engine.api import EngineConfig, SamplingParams
from trellis_jax.engine.builder import build_engine, make_runner
from trellis_testing.drive import run_streaming

K = 8
CONFIG = EngineConfig(
    num_pages=20,
    page_size=16,
    max_num_seqs=8,
    max_num_batched_tokens=64,
    token_buckets=(8, 64),
    seq_buckets=(2, 8),
    max_model_len=256,
    deterministic=True,
    check_integrity_when_idle=True,
    decode_steps=K,
)
GREEDY = SamplingParams(temperature=0, max_tokens=13, ignore_eos=True)  # 13: not a multiple of K


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return tiny_model("llama")


@pytest.fixture(scope="module")
def runner(loaded):
    from trellis_jax.runner.compile_count import backend_compile_count

    runner = make_runner(CONFIG, loaded)
    compiled = (runner.num_compilations, backend_compile_count())
    yield runner
    assert (runner.num_compilations, backend_compile_count()) == compiled, "a step compiled after warm-up"


def run(loaded, runner, steps: int, requests, *, overlap: bool = False, abort_at: dict | None = None, **options):
    """{id: [(tokens, finish reason, text)]} after running `requests` [(id, prompt, params)] to the end;
    abort_at {id: k} aborts a request once at least k of its tokens were streamed."""
    config = EngineConfig(**{**CONFIG.__dict__, "decode_steps": steps, "overlap": overlap, **options})
    engine, _ = build_engine(config, loaded, runner)
    ran = []
    original = runner.dispatch

    def spy(plan):
        ran.append(plan.decode_steps)
        return original(plan)

    runner.dispatch = spy
    try:
        outputs = run_streaming(engine, requests, abort_after=abort_at)
    finally:
        del runner.dispatch
    engine.scheduler.check_integrity()
    cache = engine.scheduler.kv.cache
    assert cache.num_locked_pages == 0 and cache.num_private_pages == 0
    assert (K in ran) == (steps == K), ran
    run.num_preemptions = engine.scheduler.stats.num_preemptions
    return {rid: [(c.token_ids, c.finish_reason, c.text) for c in o.outputs] for rid, o in outputs.items()}


def prompts(n: int, length: int = 20, params=GREEDY):
    return [(f"r{i}", [(5 * i + 3 * j) % 300 + 10 for j in range(length)], params) for i in range(n)]


def assert_same(loaded, runner, requests, **options):
    single = run(loaded, runner, 1, requests, **options)
    assert run(loaded, runner, K, requests, **options) == single
    assert run(loaded, runner, K, requests, overlap=True, **options) == single
    return single


@pytest.mark.parametrize("cache", [True, False])
def test_greedy_matches_with_the_cache_on_and_off(loaded, runner, cache):
    shared = [(rid, [1, 2, 3] * 8 + prompt, params) for rid, prompt, params in prompts(4)]
    outputs = assert_same(loaded, runner, shared, disable_radix_cache=not cache)
    assert all(len(o[0][0]) == 13 and o[0][1] == "length" for o in outputs.values())


def test_n_completions_and_stop_strings_match(loaded, runner):
    text = run(loaded, runner, 1, prompts(1))["r0"][0][2]
    stop = GREEDY.with_updates(stop=(text[len(text) // 2 :][:2],))
    requests = [("n", prompts(1)[0][1], GREEDY.with_updates(n=3)), ("s", prompts(1)[0][1], stop)]
    outputs = assert_same(loaded, runner, requests)
    assert outputs["s"][0][1] == "stop" and len(outputs["n"]) == 3


def test_stop_token_ids_match(loaded, runner):
    tokens = run(loaded, runner, 1, prompts(1))["r0"][0][0]
    stop = GREEDY.with_updates(stop_token_ids=(tokens[5],))
    outputs = assert_same(loaded, runner, prompts(3, params=stop))
    assert outputs["r0"][0][1] == "stop" and outputs["r0"][0][0][-1] == tokens[5]


def test_abort_mid_stream_keeps_a_prefix_of_the_output(loaded, runner):
    full = run(loaded, runner, 1, prompts(4))
    aborted = run(loaded, runner, K, prompts(4), abort_at={"r1": 3, "r2": 6})
    for rid in ("r1", "r2"):
        tokens, reason, _ = aborted[rid][0]
        assert reason == "abort" and 3 <= len(tokens) < 13 and full[rid][0][0][: len(tokens)] == tokens
    assert aborted["r0"] == full["r0"] and aborted["r3"] == full["r3"]


def test_preemption_under_page_pressure_matches(loaded, runner):
    long = [(rid, prompt, GREEDY.with_updates(max_tokens=60)) for rid, prompt, _ in prompts(6, 40)]
    assert_same(loaded, runner, long)
    assert run.num_preemptions > 0


def test_logprobs_match(loaded, runner):
    outputs = {}
    for steps in (1, K):
        config = EngineConfig(**{**CONFIG.__dict__, "decode_steps": steps, "overlap": False})
        engine, _ = build_engine(config, loaded, runner)
        engine.add_request("lp", prompts(1)[0][1], GREEDY.with_updates(logprobs=3))
        while engine.has_unfinished():
            engine.step()
        (out,) = engine.pop_finished()
        outputs[steps] = out.outputs[0].logprobs
    assert [t.token_id for t in outputs[K]] == [t.token_id for t in outputs[1]]
    assert [[i for i, _ in t.top_logprobs] for t in outputs[K]] == [[i for i, _ in t.top_logprobs] for t in outputs[1]]
    assert [t.logprob for t in outputs[K]] == pytest.approx([t.logprob for t in outputs[1]], abs=1e-5)


def test_grammar_rows_beside_plain_rows_match(loaded, runner):
    from trellis_jax.engine.structured import StructuredOutput

    json_object = SamplingParams(
        temperature=1.0, seed=3, max_tokens=12, structured_output=StructuredOutput("json_object")
    )
    plain = [(rid, prompt, GREEDY.with_updates(max_tokens=30)) for rid, prompt, _ in prompts(2)]
    outputs = assert_same(loaded, runner, [("json", prompts(1)[0][1], json_object), *plain])
    assert outputs["json"][0][2].startswith("{")


def test_seeded_sampling_matches(loaded, runner):
    seeded = SamplingParams(temperature=0.9, top_p=0.9, seed=11, max_tokens=13, ignore_eos=True)
    assert_same(loaded, runner, prompts(3, params=seeded))
