"""tool_choice against tools (serve/tool_calls/choice.py), the forced-call grammar, the format chosen from a
chat template, and tools written into the prompt of a template that does not render them."""

from __future__ import annotations

import json

import pytest

from trellis_jax.serve.errors import APIError
from trellis_jax.serve.tool_calls import tool_prompt
from trellis_jax.serve.tool_calls.choice import plan_tools
from trellis_jax.serve.tool_calls.formats import ToolFormat, tool_format
from trellis_jax.serve.tool_calls.grammar import grammar_error, lark_grammar
from trellis_jax.serve.tool_calls.schema import NamedToolChoice, ToolSpec

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
HERMES = ToolFormat("hermes", template_renders_tools=True, template_renders_calls=True)


def tools(*names: str) -> list[ToolSpec]:
    return [
        ToolSpec.model_validate({"type": "function", "function": {"name": n, "parameters": WEATHER}}) for n in names
    ]


def named(name: str) -> NamedToolChoice:
    return NamedToolChoice.model_validate({"type": "function", "function": {"name": name}})


def test_no_tools_means_no_parsing():
    assert plan_tools(None, None, HERMES) is None


def test_auto_is_the_default_and_parses_without_a_grammar():
    plan = plan_tools(tools("f"), None, HERMES)
    assert (plan.parser, plan.grammar) == ("hermes", None)


def test_none_renders_but_does_not_parse():
    assert plan_tools(tools("f"), "none", HERMES) is None


def test_tool_choice_without_tools_is_a_400():
    with pytest.raises(APIError) as error:
        plan_tools(None, "required", HERMES)
    assert (error.value.status, error.value.param) == (400, "tool_choice")


def test_named_function_not_in_tools_is_a_400():
    with pytest.raises(APIError) as error:
        plan_tools(tools("f"), named("g"), HERMES)
    assert error.value.param == "tool_choice" and "'g'" in error.value.message


def test_duplicate_function_names_are_a_400():
    with pytest.raises(APIError) as error:
        plan_tools(tools("f", "f"), None, HERMES)
    assert error.value.param == "tools[1].function.name"


def test_unknown_format_is_a_400_naming_the_flag():
    with pytest.raises(APIError) as error:
        plan_tools(tools("f"), "auto", ToolFormat(None, True, True))
    assert "--tool-call-parser" in error.value.message


def test_named_choice_constrains_to_that_function_only():
    plan = plan_tools(tools("f", "g"), named("g"), HERMES)
    assert '"const": "g"' in plan.grammar and '"const": "f"' not in plan.grammar


def test_required_allows_every_tool():
    plan = plan_tools(tools("f", "g"), "required", HERMES)
    assert '"const": "f"' in plan.grammar and '"const": "g"' in plan.grammar


@pytest.mark.parametrize("parser", ["hermes", "llama3_json"])
def test_grammars_compile_with_llguidance(parser):
    pytest.importorskip("llguidance")
    assert grammar_error(lark_grammar([("f", WEATHER), ("g", None)], parser)) is None


def test_grammar_forces_calls_that_parse():
    llguidance = pytest.importorskip("llguidance")
    from trellis_jax.serve.tool_calls.calls import extract
    from trellis_jax.serve.tool_calls.hermes import HermesExtractor

    grammar = llguidance.LLMatcher.grammar_from_lark(lark_grammar([("f", WEATHER)], "hermes"))
    good = '<tool_call>\n{"name": "f", "arguments": {"city": "Paris"}}\n</tool_call>'
    bad = '<tool_call>\n{"name": "g", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert _accepts(llguidance, grammar, good) and not _accepts(llguidance, grammar, bad)
    assert [c.name for c in extract(HermesExtractor(), good).calls] == ["f"]


def _accepts(llguidance, grammar: str, text: str) -> bool:
    """Whether the grammar accepts `text` (byte tokens: one token per byte)."""
    tokenizer = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_ByteTok()))
    matcher = llguidance.LLMatcher(tokenizer, grammar)
    return matcher.consume_tokens(list(text.encode())) and matcher.is_accepting()


class _ByteTok:
    eos_token_id = 256
    bos_token_id = None
    tokens = [bytes([i]) for i in range(256)] + [b"<eos>"]

    def __call__(self, text, **_):
        return list(text.encode() if isinstance(text, str) else text)


def test_unsupported_schema_is_a_400_naming_tools():
    pytest.importorskip("llguidance")
    bad = [ToolSpec.model_validate({"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}}})]
    with pytest.raises(APIError) as error:
        plan_tools(bad, "required", HERMES)
    assert error.value.param == "tools"


def test_format_from_a_hermes_template():
    fmt = tool_format("auto", "{% for tool in tools %}{{ tool }}{% endfor %}<tool_call>")
    assert (fmt.parser, fmt.template_renders_tools) == ("hermes", True)


def test_format_from_a_llama_template():
    assert tool_format("auto", "{% if tools %}...<|python_tag|>{% endif %}").parser == "llama3_json"


def test_template_without_tools_gets_hermes_and_the_prompt_fallback():
    fmt = tool_format("auto", "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert (fmt.parser, fmt.template_renders_tools, fmt.template_renders_calls) == ("hermes", False, False)


def test_template_with_an_unknown_tool_format_is_unknown():
    assert tool_format("auto", "{% if tools %}[AVAILABLE_TOOLS]{% endif %}").parser is None


def test_explicit_parser_wins():
    assert tool_format("llama3_json", "<tool_call>").parser == "llama3_json"


def test_bad_parser_name_is_refused():
    with pytest.raises(ValueError):
        tool_format("mistral", None)


FALLBACK = ToolFormat("hermes", template_renders_tools=False, template_renders_calls=False)
TOOL_DICT = {"type": "function", "function": {"name": "f", "parameters": WEATHER}}


def test_prompt_fallback_adds_a_system_message_with_the_tools():
    messages, left = tool_prompt.prepare([{"role": "user", "content": "hi"}], [TOOL_DICT], FALLBACK)
    assert left is None and messages[0]["role"] == "system" and json.dumps(TOOL_DICT) in messages[0]["content"]
    assert messages[1] == {"role": "user", "content": "hi"}


def test_prompt_fallback_extends_an_existing_system_message():
    messages, _ = tool_prompt.prepare([{"role": "system", "content": "Be brief."}], [TOOL_DICT], FALLBACK)
    assert messages[0]["content"].startswith("Be brief.\n\n# Tools") and len(messages) == 1


def test_prompt_fallback_writes_past_calls_and_results_as_text():
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"city": "Paris"}'}}
    history = [
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "20C"},
    ]
    messages, _ = tool_prompt.prepare(history, None, FALLBACK)
    assert messages[0] == {
        "role": "assistant",
        "content": '<tool_call>\n{"name": "f", "arguments": {"city": "Paris"}}\n</tool_call>',
    }
    assert messages[1] == {"role": "user", "content": "<tool_response>\n20C\n</tool_response>"}


def test_template_that_renders_tools_gets_them_untouched():
    history = [{"role": "user", "content": "hi"}]
    assert tool_prompt.prepare(history, [TOOL_DICT], HERMES) == (history, [TOOL_DICT])


def test_forced_calls_ride_as_a_lark_structured_output():
    from trellis_jax.engine.sampling_params import SamplingParams, StructuredOutput
    from trellis_jax.serve.tool_calls.choice import constrained

    plan = plan_tools(tools("f"), named("f"), HERMES)
    assert constrained(SamplingParams(), plan).structured_output == StructuredOutput("lark", plan.grammar)


def test_forced_calls_with_a_response_format_are_a_400():
    from trellis_jax.engine.sampling_params import SamplingParams, StructuredOutput
    from trellis_jax.serve.tool_calls.choice import constrained

    sampling = SamplingParams(structured_output=StructuredOutput("json_object"))
    with pytest.raises(APIError) as error:
        constrained(sampling, plan_tools(tools("f"), "required", HERMES))
    assert (error.value.status, error.value.param) == (400, "tool_choice")


def test_auto_leaves_sampling_alone():
    from trellis_jax.engine.sampling_params import SamplingParams
    from trellis_jax.serve.tool_calls.choice import constrained

    sampling = SamplingParams()
    assert constrained(sampling, plan_tools(tools("f"), "auto", HERMES)) is sampling


def test_parallel_false_allows_one_forced_call():
    plan = plan_tools(tools("f"), "required", HERMES, parallel=False)
    assert plan.grammar.startswith("start: call\n")


def test_parallel_false_keeps_the_first_call_of_a_free_reply():
    from trellis_jax.serve.tool_calls.calls import extract

    call = '<tool_call>{"name": "f", "arguments": {}}</tool_call>'
    plan = plan_tools(tools("f"), "auto", HERMES, parallel=False)
    assert len(extract(plan.extractor(), call + call).calls) == 1


def test_special_tool_call_tags_are_kept_in_the_text():
    from trellis_jax.engine.sampling_params import SamplingParams
    from trellis_jax.serve.tool_calls.choice import constrained

    fmt = tool_format("auto", "<tool_call>", special_tokens={"<tool_call>", "</tool_call>"})
    plan = plan_tools(tools("f"), "auto", fmt)
    assert constrained(SamplingParams(), plan).skip_special_tokens is False


def test_a_client_choice_of_skip_special_tokens_wins():
    from trellis_jax.engine.sampling_params import SamplingParams
    from trellis_jax.serve.tool_calls.choice import constrained

    plan = plan_tools(tools("f"), "auto", tool_format("auto", "<tool_call>", special_tokens={"<tool_call>"}))
    assert constrained(SamplingParams(), plan, skip_special_tokens_given=True).skip_special_tokens is True


def test_plain_text_tags_leave_special_tokens_skipped():
    assert tool_format("auto", "<tool_call>", special_tokens={"<|im_end|>"}).keep_special_tokens is False
