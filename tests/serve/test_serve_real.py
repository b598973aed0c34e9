"""End to end: `python -m trellis_jax.serve` on the default model (SmolLM2-135M-Instruct), driven by the
official `openai` client, then stopped with SIGTERM. One deterministic compiled shape keeps start-up
short on CPU; every request is small (a few greedy tokens) so the module fits the CI budget."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow

MODEL = "SmolLM2-135M-Instruct"
QUESTION = [
    {"role": "system", "content": "You are a concise assistant. Answer with a single word, no punctuation."},
    {"role": "user", "content": "What is the capital of France?"},
]
ARGS = [
    "--port",
    "0",
    "--deterministic",
    "--max-num-seqs",
    "4",
    "--max-num-batched-tokens",
    "64",
    "--max-model-len",
    "512",
    "--kv-memory",
    "8MiB",
    "--log-level",
    "warning",
]


class CLIServer:
    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trellis_jax.serve", *ARGS],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.url = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            match = re.search(r"(http://\S+)/v1 ", line)
            if match:
                self.url = match.group(1)
                self.ready.set()
        self.ready.set()

    def wait_ready(self, timeout=600):
        assert self.ready.wait(timeout) and self.url, "server did not start:\n" + "".join(self.lines[-30:])

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


@pytest.fixture(scope="module")
def real_server():
    server = CLIServer()
    try:
        server.wait_ready()
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()


@pytest.fixture(scope="module")
def client(real_server):
    return openai.OpenAI(base_url=real_server.url + "/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def greedy_reply(client):
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=6, temperature=0)
    return r.choices[0].message.content


def test_startup_banner_names_url_model_kv_and_time(real_server):
    banner = next(line for line in real_server.lines if "/v1 " in line)
    assert f"model={MODEL}" in banner and "KV=" in banner and re.search(r"started in \d+\.\d+s", banner)


def test_greedy_chat_answers(greedy_reply):
    assert "paris" in greedy_reply.lower()


def test_stream_equals_non_stream_and_reports_cache_hits(client, greedy_reply):
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == greedy_reply
    usage = chunks[-1].usage
    assert usage.prompt_tokens_details.cached_tokens >= 16  # the repeated prompt's full pages
    assert usage.model_extra["prefill_flops_saved"] > 0


def test_n_choices_with_logprobs(client, greedy_reply):
    r = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=6, temperature=0, n=2, logprobs=True, top_logprobs=2
    )
    for choice in r.choices:
        assert choice.message.content == greedy_reply
        tokens = choice.logprobs.content
        assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in tokens)
        assert tokens[0].top_logprobs[0].logprob >= tokens[0].top_logprobs[1].logprob


def test_stop_string_cuts_the_reply(client, greedy_reply):
    stop = greedy_reply.strip()[:3]
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=6, temperature=0, stop=[stop])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == greedy_reply[: greedy_reply.index(stop)]


def test_completions_endpoint_on_raw_prompt(client):
    r = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=4, temperature=0)
    assert r.choices[0].text.strip().startswith("5")


def test_pages_return_to_idle_and_sigterm_exits_zero(real_server, client, greedy_reply):
    def gauge(state):
        text = httpx.get(real_server.url + "/metrics").text
        return float(re.search(rf'trellis_kv_pages{{model="{MODEL}",state="{state}"}} (\S+)', text).group(1))

    deadline = time.monotonic() + 10
    while (gauge("locked"), gauge("private")) != (0.0, 0.0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (gauge("locked"), gauge("private")) == (0.0, 0.0)
    assert real_server.stop() == 0
    real_server.proc.stdout and time.sleep(0.2)
    assert any("shut down cleanly" in line for line in real_server.lines)
