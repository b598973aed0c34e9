"""The server driven by the official `openai` client over loopback, against the fake engine, whose
greedy output is the prompt's last byte + 1, + 2, ... (see serve_harness.py)."""

from __future__ import annotations

import httpx
from serve_harness import expected_increment

MODEL = "fake-model"
CHAT_HI_REPLY = "?@ABCDEFGH"  # the fake chat prompt ends with "<assistant>": '>' + 1 = '?'


def test_completion_text_usage_and_finish(client):
    r = client.completions.create(model=MODEL, prompt="abc", max_tokens=5, temperature=0)
    assert r.choices[0].text == expected_increment("abc", 5) == "defgh"
    assert r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (3, 5, 8)
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    assert r.model == MODEL and r.object == "text_completion"


def test_completion_stream_concatenates_to_the_same_text(client):
    chunks = list(
        client.completions.create(
            model=MODEL, prompt="klm", max_tokens=6, temperature=0, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected_increment("klm", 6)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6


def test_chat_completion(client):
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0
    )
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == CHAT_HI_REPLY[:4]
    assert r.object == "chat.completion"


def test_chat_stream_role_first_then_content(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == CHAT_HI_REPLY[:4]
    assert chunks[-1].choices[0].finish_reason == "length"


def test_n_choices(client):
    r = client.completions.create(model=MODEL, prompt="abc", max_tokens=3, temperature=0, n=3)
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    assert {c.text for c in r.choices} == {"def"}
    assert r.usage.completion_tokens == 9 and r.usage.prompt_tokens == 3


def test_n_choices_streamed(client):
    texts = {}
    for chunk in client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], n=2, max_tokens=3, temperature=0, stream=True
    ):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert texts == {0: CHAT_HI_REPLY[:3], 1: CHAT_HI_REPLY[:3]}


def test_several_prompts_get_their_own_choices(client):
    r = client.completions.create(model=MODEL, prompt=["abc", "xy"], max_tokens=2, temperature=0)
    assert [c.text for c in sorted(r.choices, key=lambda c: c.index)] == ["de", "z{"]
    assert r.usage.prompt_tokens == 5


def test_stop_string(client):
    r = client.completions.create(model=MODEL, prompt="abc", max_tokens=10, temperature=0, stop=["g", "zz"])
    assert r.choices[0].text == "def" and r.choices[0].finish_reason == "stop"


def test_token_id_prompt(client):
    r = client.completions.create(model=MODEL, prompt=[97, 98, 99], max_tokens=2, temperature=0)
    assert r.choices[0].text == "de"


def test_completion_logprobs(client):
    r = client.completions.create(model=MODEL, prompt="abc", max_tokens=3, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert lp.tokens == ["d", "e", "f"]
    assert len(lp.token_logprobs) == 3 and all(v <= 0 for v in lp.token_logprobs)
    assert all(len(top) == 2 for top in lp.top_logprobs)
    assert lp.text_offset == [0, 1, 2]


def test_chat_logprobs(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=2,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    content = r.choices[0].logprobs.content
    assert [c.token for c in content] == list(CHAT_HI_REPLY[:2])
    assert content[0].bytes == [ord("?")] and len(content[0].top_logprobs) == 3


def test_repeated_prefix_reports_cached_tokens(client):
    prompt = "The shared system prompt that every request starts with. " * 2
    first = client.completions.create(model=MODEL, prompt=prompt + "one", max_tokens=2, temperature=0)
    second = client.completions.create(model=MODEL, prompt=prompt + "two", max_tokens=2, temperature=0)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens >= len(prompt) - 4  # whole pages of 4 tokens


def test_chat_usage_counts_cached_tokens_in_stream(client):
    messages = [{"role": "system", "content": "Long shared instructions " * 4}, {"role": "user", "content": "a"}]
    list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1, temperature=0))
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=messages,
            max_tokens=1,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 0


def test_models_endpoint(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_health(fake_server):
    r = httpx.get(fake_server.url + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_metrics_count_requests_and_tokens(client, fake_server):
    def scrape():
        text = httpx.get(fake_server.url + "/metrics").text
        return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and line[0] != "#"}

    before = scrape()
    client.completions.create(model=MODEL, prompt="abc", max_tokens=4, temperature=0)
    after = scrape()
    key = 'trellis_requests_total{endpoint="completions",model="fake-model",status="ok"}'
    assert after[key] == before.get(key, 0) + 1
    tokens = 'trellis_generation_tokens_total{model="fake-model"}'
    assert after[tokens] == before[tokens] + 4
    for name in (
        "trellis_time_to_first_token_seconds_count",
        'trellis_kv_pages{model="fake-model",state="free"}',
        'trellis_scheduler_requests{model="fake-model",state="waiting"}',
        "trellis_prefix_cache_hit_tokens_total",
        "trellis_prefill_saved_flops_total",
        "trellis_kv_reread_bytes_total",
        "trellis_preemptions_total",
        "trellis_evicted_pages_total",
        "trellis_compilations_total",
        "trellis_e2e_request_latency_seconds_count",
        "trellis_lookup_draft_tokens_total",
        "trellis_lookup_accepted_tokens_total",
        "trellis_prefix_cache_partial_page_tokens_total",
        "trellis_queue_time_seconds_count",
        "trellis_prefix_cache_hit_ratio",
        "trellis_kv_pages_in_use_ratio",
        "trellis_rejected_requests_total",
    ):
        plain = name if "{" in name else name + '{model="fake-model"}'
        assert plain in after, name


def test_metrics_count_error_responses_by_status(fake_server):
    def count():
        for line in httpx.get(fake_server.url + "/metrics").text.splitlines():
            if line.startswith('trellis_http_responses_total{model="fake-model",path="/v1/completions",status="400"}'):
                return float(line.split()[1])
        return 0.0

    before = count()
    httpx.post(fake_server.url + "/v1/completions", json={"model": MODEL, "prompt": "x", "n": 0})
    assert count() == before + 1


def test_ratio_gauges_come_from_counters_and_do_not_reset_when_scraped(client, fake_server):
    def scrape():
        text = httpx.get(fake_server.url + "/metrics").text
        return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and line[0] != "#"}

    for _ in range(2):  # the second request finds the first one's pages
        client.completions.create(model=MODEL, prompt="a shared prefix of some length", max_tokens=1, temperature=0)
    first, second = scrape(), scrape()
    label = '{model="fake-model"}'
    ratio = first["trellis_prefix_cache_hit_ratio" + label]
    hits, queried = (first[f"trellis_prefix_cache_{k}_tokens_total" + label] for k in ("hit", "queried"))
    assert 0 < ratio == hits / queried
    assert second["trellis_prefix_cache_hit_ratio" + label] == ratio


def test_queue_time_is_a_histogram_of_every_admitted_request(client, fake_server):
    def count():
        text = httpx.get(fake_server.url + "/metrics").text
        return float(
            next(line.split()[1] for line in text.splitlines() if line.startswith("trellis_queue_time_seconds_count"))
        )

    before = count()
    client.completions.create(model=MODEL, prompt="queued", max_tokens=1, n=2, temperature=0)
    assert count() == before + 2  # n=2: two scheduler sequences, each queued once
