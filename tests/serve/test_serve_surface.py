"""The rest of the OpenAI surface: /tokenize and /detokenize (vLLM's shapes), echo on /v1/completions,
and a stable system_fingerprint."""

from __future__ import annotations

import httpx
from serve_harness import expected_increment, fake_engine

from trellis_jax import __version__
from trellis_jax.serve.app import ServerSettings, create_app
from trellis_jax.serve.responses import fingerprint

MODEL = "fake-model"
CHAT = [{"role": "user", "content": "hi"}]


def post(server, path, **body) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=30)


def test_tokenize_a_prompt_as_completions_reads_it(fake_server):
    r = post(fake_server, "/tokenize", model=MODEL, prompt="ab</s>")
    assert r.status_code == 200
    assert r.json() == {"tokens": [97, 98, 257], "count": 3, "max_model_len": 256}


def test_tokenize_messages_counts_what_chat_completions_runs(fake_server, client):
    tokenized = post(fake_server, "/tokenize", messages=CHAT).json()
    usage = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=1).usage
    assert tokenized["count"] == usage.prompt_tokens == len(tokenized["tokens"])


def test_tokenize_without_the_generation_prompt_is_shorter_by_it(fake_server):
    with_prompt = post(fake_server, "/tokenize", messages=CHAT)
    without = post(fake_server, "/tokenize", messages=CHAT, add_generation_prompt=False)
    assert with_prompt.json()["tokens"] == without.json()["tokens"] + list(b"<assistant>")


def test_tokenize_wants_exactly_one_of_prompt_and_messages(fake_server):
    for body in ({"prompt": "a", "messages": CHAT}, {}):
        r = post(fake_server, "/tokenize", **body)
        assert r.status_code == 400 and "exactly one of prompt and messages" in r.json()["error"]["message"]


def test_tokenize_names_an_unknown_model(fake_server):
    r = post(fake_server, "/tokenize", model="other", prompt="a")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_detokenize_round_trips_tokenize(fake_server):
    tokens = post(fake_server, "/tokenize", prompt="héllo</s>").json()["tokens"]
    assert post(fake_server, "/detokenize", model=MODEL, tokens=tokens).json() == {"prompt": "héllo</s>"}


def test_detokenize_refuses_ids_outside_the_vocabulary(fake_server):
    r = post(fake_server, "/detokenize", tokens=[97, 999])
    assert r.status_code == 400 and r.json()["error"]["param"] == "tokens" and "999" in r.json()["error"]["message"]


def test_echo_prepends_the_prompt_to_every_choice(client):
    r = client.completions.create(model=MODEL, prompt=["ab", "xy"], max_tokens=3, n=2, echo=True, temperature=0)
    assert [c.text for c in r.choices] == ["ab" + expected_increment("ab", 3)] * 2 + [
        "xy" + expected_increment("xy", 3)
    ] * 2


def test_echo_of_token_ids_is_their_text(client):
    r = client.completions.create(model=MODEL, prompt=[104, 105], max_tokens=2, echo=True, temperature=0)
    assert r.choices[0].text == "hi" + expected_increment("hi", 2)


def test_a_streamed_echo_opens_with_the_prompt(client):
    chunks = list(
        client.completions.create(model=MODEL, prompt="ab", max_tokens=3, echo=True, stream=True, temperature=0)
    )
    assert chunks[0].choices[0].text == "ab"
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "ab" + expected_increment("ab", 3)


def test_every_response_and_chunk_carries_the_same_fingerprint(client):
    whole = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2)
    chunks = list(client.completions.create(model=MODEL, prompt="ab", max_tokens=2, stream=True))
    assert whole.system_fingerprint == fingerprint(MODEL, __version__, None)
    assert {c.system_fingerprint for c in chunks} == {whole.system_fingerprint}


def test_the_fingerprint_is_stable_and_changes_with_model_version_or_dtype():
    base = fingerprint("m", "0.1.0", "float32")
    assert base == fingerprint("m", "0.1.0", "float32") and base.startswith("fp_")
    assert (
        len(
            {
                base,
                fingerprint("n", "0.1.0", "float32"),
                fingerprint("m", "0.2.0", "float32"),
                fingerprint("m", "0.1.0", "bfloat16"),
            }
        )
        == 4
    )


def test_tokenize_needs_the_key_when_keys_are_set():
    app = create_app(fake_engine(), ServerSettings(model_name=MODEL, api_keys=("k",)))
    from serve_harness import ServerThread

    with ServerThread(app) as server:
        refused = server.post("/tokenize", json={"prompt": "a"})
        allowed = server.post("/detokenize", json={"tokens": [97]}, headers={"Authorization": "Bearer k"})
    app.state.engine.shutdown()
    assert (refused.status_code, allowed.json()) == (401, {"prompt": "a"})
