"""LLM.generate and SamplingParams over the fake runner."""

import pytest

from trellis_jax.engine.api import LLM, RequestRejected, SamplingParams
from trellis_testing.fakes import make_fake_engine


def fake_llm(**options):
    engine, runner, cache, tokenizer = make_fake_engine(**options)
    return LLM.from_engine(engine, tokenizer), engine, runner, cache


def test_outputs_come_back_in_prompt_order_with_counts():
    llm, *_ = fake_llm()
    prompts = ["hello there", [{"role": "user", "content": "hi"}], [5, 6, 7]]
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=3))
    assert [o.num_prompt_tokens for o in outs] == [11, len("<user>hi</s><assistant>") - 4 + 1, 3]
    assert all(len(o.token_ids) == 3 and o.finish_reason == "length" for o in outs)


def test_shared_prefix_reports_cached_tokens():
    llm, *_ = fake_llm()
    system = "You are a terse assistant. "
    first = llm.generate(system + "Q1", SamplingParams(temperature=0, max_tokens=2))[0]
    second = llm.generate(system + "Q2", SamplingParams(temperature=0, max_tokens=2))[0]
    assert first.num_cached_tokens == 0
    assert second.num_cached_tokens == (len(system) + 1) // 4 * 4  # the whole pages of "...assistant. Q"


def test_n_completions_with_a_seed_differ_and_reproduce():
    llm, *_ = fake_llm()
    params = SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=5)
    first = llm.generate("abc", params)[0]
    again = llm.generate("abc", params)[0]
    assert [o.token_ids for o in first.outputs] == [o.token_ids for o in again.outputs]
    assert len({tuple(o.token_ids) for o in first.outputs}) == 3
    assert [o.index for o in first.outputs] == [0, 1, 2]


def test_logprobs_are_returned_when_asked():
    llm, *_ = fake_llm()
    out = llm.generate("abc", SamplingParams(temperature=0, max_tokens=2, logprobs=2))[0]
    assert len(out.logprobs) == 2
    assert out.logprobs[0].token_id == out.token_ids[0] and len(out.logprobs[0].top_logprobs) == 2
    assert llm.generate("abc", SamplingParams(temperature=0, max_tokens=2))[0].logprobs is None


def test_a_rejected_prompt_queues_nothing():
    llm, engine, *_ = fake_llm(num_pages=8, page_size=4)
    with pytest.raises(RequestRejected):
        llm.generate(["ok", "x" * 100], SamplingParams(max_tokens=2))
    assert not engine.has_unfinished()


def test_all_pages_return_after_generate():
    llm, engine, runner, cache = fake_llm(num_pages=24)
    llm.generate([f"shared prefix {i % 3} then {i}" for i in range(20)], SamplingParams(temperature=0, max_tokens=8))
    cache.check_integrity()
    cache.evict(cache.num_pages)
    assert cache.num_free_pages == cache.num_pages - 1


@pytest.mark.parametrize(
    "bad",
    [
        dict(temperature=-1),
        dict(top_p=0),
        dict(n=0),
        dict(max_tokens=0),
        dict(logprobs=21),
        dict(stop=[""]),
        dict(repetition_penalty=0),
    ],
)
def test_bad_sampling_params_are_clear_errors(bad):
    with pytest.raises(ValueError, match="SamplingParams"):
        SamplingParams(**bad)


def test_from_openai_maps_chat_and_completion_fields():
    chat = SamplingParams.from_openai(
        {"max_completion_tokens": 5, "logprobs": True, "top_logprobs": 3, "stop": "END", "temperature": 0.5, "seed": 3}
    )
    assert (chat.max_tokens, chat.logprobs, chat.stop, chat.temperature, chat.seed) == (5, 3, ("END",), 0.5, 3)
    completion = SamplingParams.from_openai({"max_tokens": 7, "logprobs": 2, "top_k": 40})
    assert (completion.max_tokens, completion.logprobs, completion.top_k) == (7, 2, 40)
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams.from_openai({"max_tokens": "many"})


def test_lookup_decoding_returns_every_token_of_plain_greedy_decoding():
    params = SamplingParams(temperature=0, max_tokens=9, ignore_eos=True)
    prompts = [list(range(40, 60)) + [40, 41], "abcabcabc", [7, 7, 7, 7]]
    plain = fake_llm(mode="increment")[0].generate(prompts, params)
    llm, engine, *_ = fake_llm(mode="increment", num_lookup_tokens=3)
    fast = llm.generate(prompts, params)
    assert [(o.token_ids, o.text, o.finish_reason) for o in fast] == [
        (o.token_ids, o.text, o.finish_reason) for o in plain
    ]
    assert engine.scheduler.stats.num_accepted_draft_tokens > 0


def test_a_missing_chat_template_file_fails_before_the_model_loads(tmp_path):
    from trellis_jax.engine.builder import build_engine
    from trellis_jax.engine.config import EngineConfig

    missing = str(tmp_path / "nope.jinja")
    with pytest.raises(ValueError, match="cannot read the chat template .*nope.jinja"):
        build_engine(EngineConfig(model="no-such-model-either", chat_template=missing))


def test_a_chat_template_file_replaces_the_models_template(tmp_path):
    from trellis_jax.engine.builder import build_engine
    from trellis_jax.engine.config import EngineConfig

    path = tmp_path / "plain.jinja"
    path.write_text("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}", encoding="utf-8")
    _, tokenizer = build_engine(
        EngineConfig(
            model="tiny-llama",
            chat_template=str(path),
            warmup=False,
            max_num_seqs=2,
            max_num_batched_tokens=16,
            max_model_len=64,
        )
    )
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}]) == "<user>hi"
