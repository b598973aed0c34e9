"""The overlapped loop and the runner's resident decode rows on the real runner (tiny Llama): greedy outputs of
both loops with resident rows equal the synchronous loop's without them (every step's whole wire packed) across
the engine workloads, the cache ends intact, and nothing compiles after warm-up.

One batch-invariant runner (a row's floats do not depend on the rest of the step, so the extra never-emitted
rows of the overlapped loop cannot move a token), a small KV pool so that the long workload preempts. Each
run takes a fresh engine over it."""

from __future__ import annotations

import pytest

from trellis_jax.engine.api import EngineConfig, SamplingParams
from trellis_jax.engine.builder import build_engine, make_runner
from trellis_jax.step_plan import PENDING_TOKEN
from trellis_testing.drive import run_streaming

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
)
GREEDY = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)


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


def run(loaded, runner, overlap: bool, requests, *, abort_at: dict | None = None, **options):
    """{id: [(tokens, finish reason)]} after running `requests` [(id, prompt, params)] to the end;
    abort_at {id: k} aborts a request once k of its tokens were streamed."""
    config = EngineConfig(**{**CONFIG.__dict__, "overlap": overlap, **options})
    engine, _ = build_engine(config, loaded, runner)
    dispatched = []
    original = runner.dispatch

    def spy(plan):
        dispatched.append(plan)
        return original(plan)

    runner.dispatch = spy
    try:
        outputs = run_streaming(engine, requests, abort_after=abort_at)
    finally:
        del runner.dispatch
    engine.scheduler.check_integrity()
    cache = engine.scheduler.kv.cache
    assert cache.num_locked_pages == 0 and cache.num_private_pages == 0
    if overlap and not options.get("num_lookup_tokens"):
        assert any(PENDING_TOKEN in w.token_ids for p in dispatched for w in p.sequences)
    run.num_preemptions = engine.scheduler.stats.num_preemptions
    return {rid: [(c.token_ids, c.finish_reason, c.text) for c in o.outputs] for rid, o in outputs.items()}


def prompts(n: int, length: int = 20):
    return [(f"r{i}", [(5 * i + 3 * j) % 300 + 10 for j in range(length)], GREEDY) for i in range(n)]


def assert_same(loaded, runner, requests, **options):
    """Both loops with the runner's resident decode rows give what the synchronous loop gives without them."""
    runner.resident_state = False
    try:
        whole_wire = run(loaded, runner, False, requests, **options)
    finally:
        runner.resident_state = True
    resident = runner.resident_stats["continued"]
    assert run(loaded, runner, False, requests, **options) == whole_wire
    assert run(loaded, runner, True, requests, **options) == whole_wire
    assert runner.resident_stats["continued"] > resident
    return whole_wire


@pytest.mark.parametrize("cache", [True, False])
def test_greedy_matches_with_the_cache_on_and_off(loaded, runner, cache):
    shared = [(rid, [1, 2, 3] * 8 + prompt, params) for rid, prompt, params in prompts(4)]
    assert_same(loaded, runner, shared, disable_radix_cache=not cache)


def test_n_completions_and_stop_strings_match(loaded, runner):
    sync = run(loaded, runner, False, prompts(1))
    text = sync["r0"][0][2]
    stop = GREEDY.with_updates(stop=(text[len(text) // 2 :][:2],))
    requests = [("n", prompts(1)[0][1], GREEDY.with_updates(n=3)), ("s", prompts(1)[0][1], stop)]
    outputs = assert_same(loaded, runner, requests)
    assert outputs["s"][0][1] == "stop" and len(outputs["n"]) == 3


def test_abort_mid_stream_matches(loaded, runner):
    outputs = assert_same(loaded, runner, prompts(4), abort_at={"r1": 3, "r2": 6})
    assert [len(outputs[r][0][0]) for r in ("r1", "r2")] == [3, 6] and outputs["r1"][0][1] == "abort"


def test_preemption_under_page_pressure_matches(loaded, runner):
    long = [(rid, prompt, GREEDY.with_updates(max_tokens=60)) for rid, prompt, _ in prompts(6, 40)]
    assert_same(loaded, runner, long)
    assert run.num_preemptions > 0


def test_prompt_lookup_matches(loaded, runner):
    echo = [("echo", [11, 12, 13, 14] * 6, GREEDY), *prompts(2)]
    assert_same(loaded, runner, echo, num_lookup_tokens=2)


def test_grammar_rows_beside_plain_rows_match(loaded, runner):
    from trellis_jax.engine.structured import StructuredOutput

    json_object = SamplingParams(
        temperature=1.0, seed=3, max_tokens=12, structured_output=StructuredOutput("json_object")
    )
    plain = [(rid, prompt, GREEDY.with_updates(max_tokens=30)) for rid, prompt, _ in prompts(2)]
    outputs = assert_same(loaded, runner, [("json", prompts(1)[0][1], json_object), *plain])
    assert outputs["json"][0][2].startswith("{")
