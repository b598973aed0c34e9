"""AsyncEngine over the fake runner: streaming, abort at any stage, early exit, errors; each test with the
synchronous and the overlapped engine loop."""

import asyncio
import threading
import time

import pytest

from trellis_jax.engine.api import AsyncEngine, RequestRejected, SamplingParams
from trellis_testing.fakes import make_fake_engine


@pytest.fixture(params=[False, True], ids=["sync", "overlap"])
def engine(request):
    inner, runner, cache, tokenizer = make_fake_engine(mode="increment", num_pages=64, overlap=request.param)
    async_engine = AsyncEngine(inner, tokenizer)
    yield async_engine
    async_engine.shutdown()


def slow_steps(engine) -> SamplingParams:
    """The fake runner is so fast that the engine thread could reach EOS before an abort lands: slow each
    step a little and return sampling that ignores EOS, so only the abort can end the stream."""
    original = engine.engine.step
    engine.engine.step = lambda: time.sleep(0.005) or original()
    return SamplingParams(temperature=0, max_tokens=10_000, ignore_eos=True)


async def collect(stream):
    return [d async for d in stream]


def test_stream_concatenates_to_the_final_text(engine):
    deltas = asyncio.run(collect(engine.generate("a", SamplingParams(temperature=0, max_tokens=5), "r1")))
    assert "".join(d.text for d in deltas) == "bcdef"
    assert [t for d in deltas for t in d.token_ids] == [ord(c) for c in "bcdef"]
    assert deltas[-1].finish_reason == "length" and all(d.finish_reason is None for d in deltas[:-1])
    assert deltas[-1].num_output_tokens == 5 and deltas[-1].num_prompt_tokens == 1


def test_steps_run_off_the_event_loop_thread(engine):
    threads = set()
    original = engine.engine.step
    engine.engine.step = lambda: threads.add(threading.get_ident()) or original()
    asyncio.run(collect(engine.generate("a", SamplingParams(temperature=0, max_tokens=3))))
    assert threads and threading.get_ident() not in threads


def test_n_completions_stream_with_their_index(engine):
    deltas = asyncio.run(collect(engine.generate("a", SamplingParams(n=2, temperature=0, max_tokens=3))))
    assert {d.index for d in deltas} == {0, 1}
    assert sum(d.finished for d in deltas) == 2


def test_abort_mid_stream_ends_it_with_abort_and_frees_pages(engine):
    only_abort_can_end_it = slow_steps(engine)

    async def main():
        seen = []
        async for delta in engine.generate("a", only_abort_can_end_it, "long"):
            seen.append(delta)
            if len(seen) == 3:
                engine.abort("long")
        return seen

    deltas = asyncio.run(main())
    assert deltas[-1].finish_reason == "abort"
    assert wait_idle(engine)


def test_leaving_the_stream_early_aborts_the_request(engine):
    async def main():
        stream = engine.generate("a", SamplingParams(temperature=0, max_tokens=10_000), "gone")
        async for _ in stream:
            break
        await stream.aclose()

    asyncio.run(main())
    assert wait_idle(engine)


def test_abort_before_the_request_reaches_the_engine_thread(engine):
    only_abort_can_end_it = slow_steps(engine)

    async def main():
        stream = engine.generate("a", only_abort_can_end_it, "early")
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)  # generate() has queued the request; the engine thread may not have seen it
        engine.abort("early")
        return [await first] + [d async for d in stream]

    deltas = asyncio.run(main())
    assert deltas[-1].finish_reason == "abort"
    assert wait_idle(engine)


def test_rejected_prompt_raises_before_any_delta(engine):
    with pytest.raises(RequestRejected):
        asyncio.run(collect(engine.generate("x" * 1000, SamplingParams(max_tokens=2))))


def test_failing_step_fails_the_stream_and_frees_everything(engine):
    def boom(plan):
        raise RuntimeError("device fell over")

    engine.engine.runner.run = boom
    with pytest.raises(RuntimeError, match="device fell over"):
        asyncio.run(collect(engine.generate("a", SamplingParams(max_tokens=3))))
    assert wait_idle(engine)


def wait_idle(engine, timeout=5.0):
    """True once the engine thread has no request left and every page is free or in the tree."""
    import time

    deadline = time.monotonic() + timeout
    cache = engine.engine.scheduler.kv.cache
    while time.monotonic() < deadline:
        if not engine.engine.has_unfinished() and cache.num_private_pages == 0 and cache.num_locked_pages == 0:
            return True
        time.sleep(0.01)
    return False


def test_flush_cache_evicts_finished_prefixes_so_the_next_request_starts_cold(engine):
    prompt = "abcdefghijklmnopqrst"  # 20 tokens: several 4-token pages
    asyncio.run(collect(engine.generate(prompt, SamplingParams(temperature=0, max_tokens=2))))
    cache = engine.engine.scheduler.kv.cache
    assert cache.num_evictable_pages > 0
    freed = asyncio.run(engine.flush_cache())
    assert freed > 0 and cache.num_evictable_pages == 0
    deltas = asyncio.run(collect(engine.generate(prompt, SamplingParams(temperature=0, max_tokens=2))))
    assert deltas[-1].num_cached_tokens == 0


def test_flush_cache_of_one_namespace_keeps_the_others_cached(engine):
    prompt, greedy = "abcdefghijklmnopqrst", SamplingParams(temperature=0, max_tokens=2)

    def run(namespace):
        return asyncio.run(collect(engine.generate(prompt, greedy, namespace=namespace)))[-1].num_cached_tokens

    run("a"), run("b")
    assert asyncio.run(engine.flush_cache("b")) > 0
    assert run("a") > 0 and run("b") == 0


def test_flush_cache_leaves_a_running_request_s_pages_alone(engine):
    only_abort_can_end_it = slow_steps(engine)

    async def main():
        stream = engine.generate("abcdefghijklmnop", only_abort_can_end_it, "long")
        first = await stream.__anext__()
        await engine.flush_cache()
        second = await stream.__anext__()  # still decoding over its own pages
        engine.abort("long")
        rest = [d async for d in stream]
        return first, second, rest

    first, second, rest = asyncio.run(main())
    assert second.token_ids and rest[-1].finish_reason == "abort"
    engine.engine.scheduler.kv.cache.check_integrity()


@pytest.mark.parametrize("ran_before", [False, True])
def test_flush_after_shutdown_raises_instead_of_hanging(engine, ran_before):
    from trellis_jax.engine.async_engine import EngineShutDown

    if ran_before:
        asyncio.run(collect(engine.generate("a", SamplingParams(temperature=0, max_tokens=2))))
    engine.shutdown()
    with pytest.raises(EngineShutDown):
        asyncio.run(asyncio.wait_for(engine.flush_cache(), timeout=10))
