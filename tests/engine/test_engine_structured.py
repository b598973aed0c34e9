"""Structured outputs and logit_bias through the real engine on the tiny random Llama (its own tokenizer).

A random model at temperature 1 writes noise: whatever the grammar allows is what comes out, so the
outputs parsing and conforming on every seed is the grammar mask at work, not the model's skill. One engine
(prompt-lookup speculation on, radix cache on) serves the module: one warm-up.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from trellis_jax.engine.api import LLM, SamplingParams
from trellis_jax.engine.structured import StructuredOutput
from trellis_jax.runner import backend_compile_count
from trellis_testing.schema_check import problems

pytestmark = pytest.mark.slow

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {"zip": {"type": "string", "maxLength": 5}, "main": {"type": "boolean"}},
            "required": ["zip", "main"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "role", "tags", "address"],
    "additionalProperties": False,
}
SCHEMA = StructuredOutput("json_schema", json.dumps(PERSON))
# Long and repetitive: prompt lookup finds guesses in the output so far.
REPEATS = StructuredOutput(
    "json_schema", json.dumps({"type": "array", "items": {"enum": ["alpha", "beta"]}, "minItems": 12, "maxItems": 12})
)
HOT = dict(temperature=1.0, max_tokens=160)


@pytest.fixture(scope="module")
def llm(fixtures_dir):
    return LLM(
        str(fixtures_dir / "tiny_llama"),
        max_num_seqs=4,
        max_num_batched_tokens=64,
        max_model_len=256,
        num_lookup_tokens=3,
        compile_cache_dir=None,
    )


def completions(llm, prompt, **params):
    return llm.generate(prompt, SamplingParams(**params))[0].outputs


@pytest.mark.parametrize("seed", range(6))
def test_json_schema_output_parses_and_conforms_at_temperature_one(llm, seed):
    (out,) = completions(llm, "Once upon", structured_output=SCHEMA, seed=seed, **HOT)
    assert out.finish_reason == "stop"
    assert problems(json.loads(out.text), PERSON) == []


def test_without_a_grammar_the_same_sampling_is_not_json(llm):
    (out,) = completions(llm, "Once upon", seed=0, **HOT)
    with pytest.raises(ValueError):
        json.loads(out.text)


def test_each_of_n_completions_follows_the_grammar_on_its_own(llm):
    outs = completions(llm, "Hello", structured_output=SCHEMA, n=2, seed=11, **HOT)
    texts = [o.text for o in outs]
    assert texts[0] != texts[1]
    assert all(problems(json.loads(t), PERSON) == [] for t in texts)


def test_json_object_gives_an_object(llm):
    (out,) = completions(llm, "Hi", structured_output=StructuredOutput("json_object"), seed=2, **HOT)
    if out.finish_reason == "stop":  # an open object may run to max_tokens; a finished one must parse
        assert isinstance(json.loads(out.text), dict)
    assert out.text.startswith("{")


def test_regex_and_lark_grammars(llm):
    (digits,) = completions(llm, "Hi", structured_output=StructuredOutput("regex", r"[0-9]{3}-[a-c]{2}"), seed=1, **HOT)
    assert len(digits.text) == 6 and digits.text[3] == "-" and digits.finish_reason == "stop"
    lark = 'start: "<call>" %json{"type": "object", "properties": {"x": {"enum": [1, 2]}}, "required": ["x"]} "</call>"'
    (call,) = completions(llm, "Hi", structured_output=StructuredOutput("lark", lark), seed=3, **HOT)
    assert call.text.startswith("<call>") and call.text.endswith("</call>")
    assert json.loads(call.text[len("<call>") : -len("</call>")])["x"] in (1, 2)


def test_greedy_grammar_output_is_the_same_with_prompt_lookup_drafts(llm):
    """Draft rows carry the grammar's mask after their guesses, so speculation changes no token."""
    params = SamplingParams(structured_output=REPEATS, temperature=0, max_tokens=120)
    accepted = llm.engine.scheduler.stats.num_accepted_draft_tokens
    speculated = llm.generate("Lookup", params)[0].outputs[0]
    assert llm.engine.scheduler.stats.num_accepted_draft_tokens > accepted
    config = llm.engine.scheduler.config
    llm.engine.scheduler.config = dataclasses.replace(config, num_lookup_tokens=0)
    try:
        plain = llm.generate("Lookup", params)[0].outputs[0]
    finally:
        llm.engine.scheduler.config = config
    assert speculated.token_ids == plain.token_ids
    assert problems(json.loads(plain.text), json.loads(REPEATS.spec)) == []


def test_cached_prefix_reuse_leaves_greedy_grammar_output_unchanged(llm):
    params = SamplingParams(structured_output=SCHEMA, temperature=0, max_tokens=160)
    first = llm.generate("A shared prompt that spans a page", params)[0]
    again = llm.generate("A shared prompt that spans a page", params)[0]
    assert again.num_cached_tokens > 0
    assert again.outputs[0].text == first.outputs[0].text


def test_streamed_deltas_reassemble_the_output(llm):
    params = SamplingParams(structured_output=SCHEMA, seed=5, **HOT)
    whole = llm.generate("Stream", params)[0].outputs[0].text
    llm.engine.add_request("streamed", llm.tokenizer.encode("Stream"), params)
    pieces = []
    while llm.engine.has_unfinished():
        pieces += [d.text for d in llm.engine.step()]
    llm.engine.pop_finished()
    assert "".join(pieces) == whole


def test_an_unsupported_schema_is_refused_at_add_request(llm):
    bad = StructuredOutput("json_schema", json.dumps({"type": "array", "uniqueItems": True}))
    with pytest.raises(ValueError, match="uniqueItems"):
        llm.engine.add_request("bad", [1, 2], SamplingParams(structured_output=bad))
    assert not llm.engine.has_unfinished()


def test_abort_frees_the_grammar_state(llm):
    llm.engine.add_request("gone", [5, 6, 7], SamplingParams(structured_output=SCHEMA, n=2))
    llm.engine.step()
    llm.engine.abort("gone")
    while llm.engine.has_unfinished():
        llm.engine.step()
    llm.engine.pop_finished()
    assert len(llm.engine._grammar_rows) == 0


def test_logit_bias_forces_and_bans_tokens(llm):
    (plain,) = completions(llm, "Hi", temperature=0, max_tokens=4, ignore_eos=True)
    banned = plain.token_ids[0]
    (biased,) = completions(llm, "Hi", temperature=0, max_tokens=4, ignore_eos=True, logit_bias={banned: -100})
    assert biased.token_ids[0] != banned
    (forced,) = completions(llm, "Hi", temperature=1.0, seed=4, max_tokens=4, ignore_eos=True, logit_bias={"77": 100})
    assert forced.token_ids == [77] * 4


def test_logit_bias_outside_the_vocabulary_is_refused(llm):
    with pytest.raises(ValueError, match="logit_bias"):
        llm.engine.add_request("oov", [1], SamplingParams(logit_bias={10_000: 1.0}))


def test_grammar_and_bias_rows_after_warmup_compile_nothing(llm):
    completions(llm, "Warm", max_tokens=2)
    before = backend_compile_count()
    outs = llm.generate(
        ["One", "Two", "Three"],
        [
            SamplingParams(structured_output=SCHEMA, seed=1, **HOT),
            SamplingParams(logit_bias={3: 5.0}, temperature=0.7, seed=2, max_tokens=8),
            SamplingParams(temperature=0, max_tokens=8),
        ],
    )
    assert problems(json.loads(outs[0].outputs[0].text), PERSON) == []
    assert backend_compile_count() == before


def test_prefetched_masks_give_what_inline_masks_give(llm):
    params = SamplingParams(structured_output=SCHEMA, n=2, seed=21, **HOT)
    rows = llm.engine._grammar_rows
    assert rows.overlap  # the default
    prefetched = [c.text for c in llm.generate("Same", params)[0].outputs]
    rows.overlap = False
    try:
        inline = [c.text for c in llm.generate("Same", params)[0].outputs]
    finally:
        rows.overlap = True
    assert prefetched == inline
