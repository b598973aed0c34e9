"""Routing keys: the prompt as the servers see it (token ids or characters) under the tenant's namespace."""

import json

from trellis_jax.router.keys import KeyMaker, namespace_of
from trellis_testing.fakes import ByteTokenizer


def chat(*messages, **extra):
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in messages], **extra}).encode()


def test_a_chat_key_by_characters_is_a_prefix_of_the_next_turns_key():
    keys = KeyMaker(None)
    turn1 = keys.key("/v1/chat/completions", chat(("system", "S"), ("user", "hi")), None).elements
    turn2 = keys.key(
        "/v1/chat/completions", chat(("system", "S"), ("user", "hi"), ("assistant", "yo"), ("user", "q")), None
    ).elements
    assert turn2[: len(turn1)] == turn1 and len(turn2) > len(turn1)


def test_a_chat_key_with_a_tokenizer_is_the_templates_token_ids():
    tokenizer = ByteTokenizer()
    messages = [{"role": "user", "content": "hello"}]
    key = KeyMaker(tokenizer).key("/v1/chat/completions", json.dumps({"messages": messages}).encode(), None)
    assert list(key.elements) == tokenizer.encode_chat(messages, add_generation_prompt=True)


def test_a_completion_key_is_the_first_prompt_tokenized():
    tokenizer = ByteTokenizer()
    body = json.dumps({"prompt": ["abc", "xyz"]}).encode()
    assert list(KeyMaker(tokenizer).key("/v1/completions", body, None).elements) == tokenizer.encode("abc")


def test_token_id_prompts_key_by_their_ids():
    body = json.dumps({"prompt": [5, 6, 7]}).encode()
    assert list(KeyMaker(None).key("/v1/completions", body, None).elements) == [5, 6, 7]


def test_content_parts_key_like_the_joined_text():
    keys = KeyMaker(None)
    parts = [{"type": "text", "text": "ab"}, {"type": "text", "text": "cd"}]
    joined = keys.key("/v1/chat/completions", chat(("user", "abcd")), None)
    split = keys.key(
        "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": parts}]}).encode(), None
    )
    assert joined == split


def test_api_keys_and_cache_salts_give_separate_namespaces():
    spaces = {
        namespace_of(None, None),
        namespace_of("Bearer k1", None),
        namespace_of("Bearer k2", None),
        namespace_of("Bearer k1", "user-7"),
    }
    assert len(spaces) == 4


def test_the_namespace_stores_neither_key_nor_salt():
    assert "secret" not in namespace_of("Bearer secret", "secret")


def test_a_body_that_is_not_json_gets_an_empty_key():
    assert KeyMaker(None).key("/v1/completions", b"{not json", None).elements == ()


def test_with_the_servers_tokenizer_a_chat_keys_by_the_ids_the_server_runs(fixtures_dir):
    from trellis_jax.router.__main__ import load_tokenizer
    from trellis_jax.serve.protocol import ChatCompletionRequest
    from trellis_jax.serve.requests_prep import chat_prompt

    tokenizer = load_tokenizer(str(fixtures_dir / "tiny_llama"))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi <|im_start|>"}]
    key = KeyMaker(tokenizer).key("/v1/chat/completions", json.dumps({"messages": messages}).encode(), None)
    request = ChatCompletionRequest(model="m", messages=messages)
    assert list(key.elements) == chat_prompt(request, tokenizer)  # what the server tokenizes
