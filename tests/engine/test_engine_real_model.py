"""The real default model: cache on vs off give identical greedy tokens over a shared-prefix workload.

Both engines take turns on one deterministic runner (batch-invariant: a sequence's floats do not depend on the
batch; pinned to a single bucket to keep start-up short): one compilation in all, asserted, so a mixed
workload after warm-up compiles nothing new. An engine is not used again once another has written into the
runner's pages: its radix tree would read the other's KV. Later tests take a fresh engine (an empty cache)
instead.
"""

import dataclasses

import pytest

from trellis_jax.engine.api import LLM, EngineConfig, SamplingParams
from trellis_jax.engine.builder import build_engine, make_runner

pytestmark = pytest.mark.slow

SYSTEM = "You are a concise assistant for a hardware store. Answer in one short sentence. "
QUESTIONS = [
    "Do you sell hammers?",
    "What time do you open?",
    "Where are the screws?",
    "Can I return paint?",
    "Do you cut keys?",
    "Is parking free?",
    "Do you rent ladders?",
    "Are dogs allowed?",
    "Do you sell lumber?",
    "Who can help me?",
    "Do you deliver?",
    "Are there gift cards?",
    "Can you mix paint?",
    "Do you sell grills?",
    "Is there a sale?",
    "Do you fix lamps?",
]
FEW_SHOT = "Classify the sentiment.\nText: I love it. Label: positive\nText: It broke. Label: negative\n"
BRANCHES = ["Text: Great value. Label: positive\n", "Text: Waste of money. Label: negative\n"]
QUERIES = ["Text: Works fine. Label:", "Text: Never again. Label:", "Text: So happy. Label:", "Text: Meh. Label:"]


def chats():
    turns = [
        "Hi, I need a drill.",
        "Cordless, please.",
        "Under fifty dollars?",
        "Which battery?",
        "Any warranty?",
        "Can I order online?",
        "When does it arrive?",
        "Thanks!",
    ]
    messages, out = [], []
    for i, turn in enumerate(turns):
        messages = messages + [{"role": "user", "content": turn}]
        out.append(list(messages))
        messages = messages + [{"role": "assistant", "content": f"Sure, answer number {i}."}]
    return out


def workload():
    prompts = [SYSTEM + q for q in QUESTIONS] + chats()
    prompts += [FEW_SHOT + branch + query for branch in BRANCHES for query in QUERIES]
    return prompts


@pytest.fixture(scope="module")
def loaded():
    from trellis_jax.checkpoints import load_model

    return load_model(None)


CONFIG = EngineConfig(
    num_pages=160,
    max_num_batched_tokens=128,
    max_num_seqs=8,
    deterministic=True,
    token_buckets=(128,),
    seq_buckets=(8,),
)


@pytest.fixture(scope="module")
def engines(loaded):
    config = CONFIG
    runner = make_runner(config, loaded)
    on = LLM.from_engine(*build_engine(config, loaded, runner))
    off_config = dataclasses.replace(CONFIG, disable_radix_cache=True)
    off = LLM.from_engine(*build_engine(off_config, loaded, runner))
    return on, off, runner


def test_cache_on_and_off_give_identical_greedy_tokens(engines):
    on, off, runner = engines
    compiled = runner.num_compilations
    params = SamplingParams(temperature=0, max_tokens=4)
    prompts = workload()
    assert len(prompts) >= 32
    with_cache = on.generate(prompts, params)
    without = off.generate(prompts, params)
    assert [o.token_ids for o in with_cache] == [o.token_ids for o in without]
    assert sum(o.num_cached_tokens for o in with_cache) > sum(o.num_prompt_tokens for o in with_cache) // 3
    assert all(o.num_cached_tokens == 0 for o in without)
    assert runner.num_compilations == compiled == 1  # nothing compiled after warm-up


def _fresh(loaded, runner, **options):
    """A new engine (empty cache) over the shared runner."""
    return LLM.from_engine(*build_engine(dataclasses.replace(CONFIG, **options), loaded, runner))


def test_prefill_saturation_changes_the_schedule_not_the_tokens(engines, loaded):
    _, _, runner = engines
    params = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
    prompts = workload()[:6]
    plain = [o.token_ids for o in _fresh(loaded, runner).generate(prompts, params)]
    saturated = _fresh(loaded, runner, prefill_saturation_tokens=16)
    assert saturated.engine.scheduler.config.prefill_saturation_tokens == 16
    assert [o.token_ids for o in saturated.generate(prompts, params)] == plain


def test_real_tokenizer_text_and_stop_strings(engines, loaded):
    _, _, runner = engines
    llm = _fresh(loaded, runner)
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)  # raw text: EOS may come first
    first = llm.generate(SYSTEM + QUESTIONS[0], params)[0]
    assert first.text and first.finish_reason == "length"
    stop = first.text[2:5]
    stopped = llm.generate(
        SYSTEM + QUESTIONS[0], SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, stop=[stop])
    )[0]
    assert stopped.finish_reason == "stop" and stopped.text == first.text[: first.text.index(stop)]


def test_lookup_decoding_changes_the_steps_not_the_tokens(engines, loaded):
    _, _, runner = engines
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    prompts = [
        "one two three four five six seven eight nine ten one two three four five six seven eight",
        SYSTEM + QUESTIONS[2],
        "Repeat after me: the quick brown fox. Repeat after me: the quick",
    ]
    plain = _fresh(loaded, runner)  # prompts one at a time: a batch takes as many steps as its slowest request
    expected = [plain.generate(prompt, params)[0].token_ids for prompt in prompts]
    fast = _fresh(loaded, runner, num_lookup_tokens=3)  # the plain engine is done with the runner's pages
    assert [fast.generate(prompt, params)[0].token_ids for prompt in prompts] == expected
    assert fast.engine.scheduler.stats.num_accepted_draft_tokens > 0
    assert fast.engine.num_steps < plain.engine.num_steps


def test_partial_page_copies_change_the_work_not_the_tokens(engines, loaded):
    _, _, runner = engines
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)  # long enough to fill a second page
    prompts = [SYSTEM + q for q in QUESTIONS[:6]]  # run one by one: each finds the earlier ones' pages
    off = _fresh(loaded, runner, disable_radix_cache=True)
    expected = [off.generate(p, params)[0].token_ids for p in prompts]
    on = _fresh(loaded, runner)
    assert [on.generate(p, params)[0].token_ids for p in prompts] == expected
    assert on.engine.scheduler.stats.num_partial_page_tokens > 0
