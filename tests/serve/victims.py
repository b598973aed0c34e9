"""A real tiny-model server with streams in flight, to prove that one bad request disturbs no other.

`tiny_model_server()` serves the committed tiny random Llama (tests/fixtures/tiny_llama) through the real
runner, so a request's values reach the real packing code. One compiled bucket (deterministic mode): a
sequence's floats do not depend on the rest of the batch, so a greedy stream in a crowd must equal the
same stream run alone.

`Victims(server, count)` keeps `count` greedy streams running back to back on threads (each restarts
when it ends) until `stop()`; every run's text and any error is recorded, for comparison with the
stream's solo run (`solo_texts`).
"""

from __future__ import annotations

import json
import pathlib
import threading

import httpx
from serve_harness import ServerThread, wait_until

from trellis_jax.engine.api import AsyncEngine, EngineConfig
from trellis_jax.engine.builder import build_engine
from trellis_jax.serve.app import ServerSettings, create_app

TINY_LLAMA = pathlib.Path(__file__).parent.parent / "fixtures" / "tiny_llama"
MODEL_NAME = "tiny-llama"
VICTIM_TOKENS = 100


def tiny_model_server() -> tuple[ServerThread, AsyncEngine]:
    config = EngineConfig(
        model=str(TINY_LLAMA),
        dtype="float32",
        deterministic=True,
        max_num_seqs=16,
        max_num_batched_tokens=64,
        num_pages=160,
        max_model_len=128,
    )
    engine, tokenizer = build_engine(config)
    async_engine = AsyncEngine(engine, tokenizer)
    app = create_app(async_engine, ServerSettings(model_name=MODEL_NAME, shutdown_engine=False))
    return ServerThread(app), async_engine


def victim_body(index: int) -> dict:
    """A greedy stream that runs for VICTIM_TOKENS tokens (EOS ignored), its prompt distinct per index."""
    return {
        "model": MODEL_NAME,
        "prompt": [5 + index, 40 + 3 * index, 7, 90 + index],
        "max_tokens": VICTIM_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "cache_salt": f"tenant-{index % 3}",
    }


def stream_text(url: str, body: dict, on_first_chunk=None) -> tuple[int, str, list]:
    """(status, concatenated text, error events) of one streamed completion."""
    text, errors = [], []
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, "", [response.text]
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[len("data: ") :])
            if "error" in event:
                errors.append(event["error"])
                continue
            text += [choice["text"] for choice in event["choices"]]
            if on_first_chunk is not None:
                on_first_chunk()
                on_first_chunk = None
    return 200, "".join(text), errors


def solo_texts(url: str, count: int) -> list[str]:
    texts = []
    for i in range(count):
        status, text, errors = stream_text(url, victim_body(i))
        assert status == 200 and not errors, (status, errors)
        texts.append(text)
    return texts


class Victims:
    def __init__(self, url: str, count: int) -> None:
        self.url, self.count = url, count
        self.runs: list[list[tuple[int, str, list]]] = [[] for _ in range(count)]
        self._started = [threading.Event() for _ in range(count)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)]

    def __enter__(self) -> Victims:
        for thread in self._threads:
            thread.start()
        assert all(event.wait(120) for event in self._started), "victim streams did not start"
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def _run(self, index: int) -> None:
        while not self._stop.is_set():
            self.runs[index].append(stream_text(self.url, victim_body(index), self._started[index].set))

    def all_in_flight(self) -> bool:
        """Every victim has streamed at least once (its request is, or was just, running)."""
        return all(event.is_set() for event in self._started)

    def wait_runs(self, minimum: int, timeout: float = 120) -> bool:
        return wait_until(lambda: all(len(r) >= minimum for r in self.runs), timeout)

    def disturbed(self, solo: list[str]) -> list[str]:
        """Each run that failed or differs from its stream's solo run, described."""
        bad = []
        for index, runs in enumerate(self.runs):
            for status, text, errors in runs:
                if status != 200 or errors or text != solo[index]:
                    bad.append(f"victim {index}: status {status}, errors {errors}, text {text!r} != {solo[index]!r}")
        return bad
