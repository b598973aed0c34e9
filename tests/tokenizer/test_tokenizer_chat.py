"""Chat templates render exactly as transformers' apply_chat_template, and bad input gets a clear error."""

from __future__ import annotations

import datetime

import pytest

from trellis_jax.tokenizer import ChatTemplateError
from trellis_jax.tokenizer.chat_template import ChatTemplate


def test_smollm2_template_matches_transformers(smollm2, reference):
    chats = [c for c in reference["chats"] if c["template"] == "smollm2"]
    assert len(chats) >= 6
    for chat in chats:
        rendered = smollm2.apply_chat_template(chat["messages"], add_generation_prompt=chat["add_generation_prompt"])
        assert rendered == chat["text"]


def test_other_templates_match_transformers_semantics(reference):
    specials = {"bos_token": reference["bos_token"], "eos_token": reference["eos_token"]}
    chats = [c for c in reference["chats"] if c["template"] != "smollm2"]
    assert chats
    for chat in chats:
        template = ChatTemplate(chat["source"], specials)
        assert template.render(chat["messages"], add_generation_prompt=True, tools=chat["tools"]) == chat["text"]


def test_encode_chat_tokenizes_specials_without_extra_bos(smollm2):
    ids = smollm2.encode_chat([{"role": "user", "content": "Hi"}])
    assert ids[0] == smollm2.token_to_id("<|im_start|>")
    assert ids[-3:] == smollm2.encode("<|im_start|>assistant\n")[-3:]


@pytest.mark.parametrize(
    "messages, problem",
    [
        ("hello", "must be a list"),
        ([["user", "hi"]], r"messages\[0\] must be a dict"),
        ([{"content": "hi"}], r"messages\[0\] has no 'role'"),
        ([{"role": "user", "content": "a"}, {"role": "user"}], r"messages\[1\] \(role 'user'\) has no 'content'"),
        ([{"role": "user", "content": None}], "null 'content'"),
        ([{"role": "user", "content": 3}], "must be a string or a list"),
    ],
)
def test_malformed_messages_are_rejected(smollm2, messages, problem):
    with pytest.raises(ChatTemplateError, match=problem):
        smollm2.apply_chat_template(messages)


def test_raise_exception_in_template_becomes_chat_template_error():
    template = ChatTemplate("{{ raise_exception('only user turns') }}", {})
    with pytest.raises(ChatTemplateError, match="only user turns"):
        template.render([{"role": "user", "content": "x"}])


def test_template_errors_name_the_problem():
    with pytest.raises(ChatTemplateError, match="does not parse"):
        ChatTemplate("{% for m in messages %}", {})
    with pytest.raises(ChatTemplateError, match="chat template failed"):
        ChatTemplate("{{ messages[0]['content'] + 1 }}", {}).render([{"role": "user", "content": "x"}])


@pytest.mark.parametrize("expression", ["messages.__class__.__mro__", "''.__class__.__subclasses__()"])
def test_sandbox_blocks_python_internals(expression):
    with pytest.raises(ChatTemplateError, match="unsafe"):
        ChatTemplate("{{ " + expression + " }}", {}).render([])


def test_sandbox_forbids_mutating_messages():
    template = ChatTemplate("{% set _ = messages.append(1) %}{{ messages | length }}", {})
    with pytest.raises(ChatTemplateError):
        template.render([{"role": "user", "content": "x"}])


def test_strftime_now_and_extra_variables():
    template = ChatTemplate("{{ strftime_now('%Y') }} {{ custom }}", {})
    assert template.render([], custom="x") == f"{datetime.datetime.now():%Y} x"


def test_tojson_keeps_non_ascii():
    template = ChatTemplate("{{ messages[0] | tojson }}", {})
    assert template.render([{"role": "user", "content": "héllo"}]) == '{"role": "user", "content": "héllo"}'


def test_model_without_template_is_a_clear_error(smollm2):
    from trellis_jax.tokenizer import Tokenizer

    bare = Tokenizer(smollm2.hf_tokenizer, bos_token_id=None, eos_token_id=2, chat_template=None, source="bare-model")
    with pytest.raises(ChatTemplateError, match="bare-model: this model has no chat template"):
        bare.apply_chat_template([{"role": "user", "content": "hi"}])


def test_a_replacement_template_renders_instead_of_the_models_and_leaves_the_original(smollm2):
    plain = smollm2.with_chat_template(
        "{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}", origin="plain.jinja"
    )
    chat = [{"role": "user", "content": "hi"}]
    assert plain.apply_chat_template(chat) == "[user] hi" + smollm2.eos_token
    assert plain.encode_chat(chat)[-1] == smollm2.eos_token_id  # its markup is still the model's special token
    assert smollm2.apply_chat_template(chat) != plain.apply_chat_template(chat)


def test_a_replacement_template_that_does_not_parse_names_its_file(smollm2):
    with pytest.raises(ChatTemplateError, match="broken.jinja: chat template does not parse"):
        smollm2.with_chat_template("{% for m in messages %}", origin="broken.jinja")
