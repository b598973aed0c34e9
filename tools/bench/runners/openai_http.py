"""Any OpenAI-compatible server as a runner: streamed /v1/completions, a wave's requests sent at once.

`ServerProcess` starts the server command, waits until `GET /v1/models` answers, and stops it (by its
own pid) on close. `OpenAIHTTPRunner` sends each request's prompt *text* (the server tokenizes it; the
ids match the harness's when the server parses special tokens), greedy, with `extra_body` for the
server's way of ignoring EOS. TTFT is the first streamed chunk carrying text. Output tokens and cached
prompt tokens come from the final usage chunk (`stream_options.include_usage`, OpenAI's
`prompt_tokens_details.cached_tokens`) when the server sends them; otherwise output tokens = text chunks
and prefill computed is unknown (None). KV bytes are not visible over HTTP: RSS of the server is sampled.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from .base import MemoryView, RequestResult, Runner, now


class ServerProcess:
    def __init__(self, command: list[str], port: int, log_path: Path, env: dict | None = None):
        self.command, self.port, self.log_path, self.env = command, port, Path(log_path), env
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 600.0) -> None:
        import httpx

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; log: {self.log_path}")
            try:
                if httpx.get(self.base_url + "/v1/models", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"server not ready after {timeout_s:.0f}s; log: {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


class OpenAIHTTPRunner(Runner):
    def __init__(
        self,
        server: ServerProcess,
        *,
        name: str,
        description: str,
        extra_body: dict,
        model: str | None = None,
        flush_path: str | None = None,
    ):
        self.server, self.name, self.description = server, name, description
        self.extra_body, self.model, self.flush_path = extra_body, model, flush_path

    def start(self) -> None:
        import httpx

        self.server.start()
        if self.model is None:  # whatever the server serves (it may check the name)
            self.model = httpx.get(self.server.base_url + "/v1/models", timeout=10.0).json()["data"][0]["id"]
        self._stream_one("Hello", 2, now())  # warm-up

    def reset(self) -> None:
        if self.flush_path:
            import httpx

            httpx.post(self.server.base_url + self.flush_path, timeout=30.0).raise_for_status()  # else runs reuse

    def run_wave(self, requests, t0) -> list[RequestResult]:
        arrival = now() - t0
        results: list[RequestResult | BaseException | None] = [None] * len(requests)

        def one(i, request):
            try:
                first, finish, n_out, cached = self._stream_one(request.prompt, request.max_tokens, t0)
                computed = None if cached is None else request.num_prompt_tokens - cached
                results[i] = RequestResult(
                    request.id, request.wave, arrival, first, finish, request.num_prompt_tokens, n_out, computed
                )
            except BaseException as error:  # re-raised in the harness thread below
                results[i] = error

        threads = [threading.Thread(target=one, args=(i, r)) for i, r in enumerate(requests)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in results:
            if isinstance(r, BaseException):
                raise RuntimeError(f"{self.name}: request failed: {r}") from r
        return results

    def memory(self) -> MemoryView:
        return MemoryView(kv_bytes=None, pid=self.server.proc.pid if self.server.proc else 0)

    def close(self) -> None:
        self.server.stop()

    def _stream_one(self, prompt: str, max_tokens: int, t0: float):
        import httpx

        body = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
            **self.extra_body,
        }
        first = None
        text_chunks, usage = 0, None
        with httpx.stream("POST", self.server.base_url + "/v1/completions", json=body, timeout=600.0) as resp:
            if resp.status_code != 200:
                raise RuntimeError(f"HTTP {resp.status_code}: {resp.read()[:500]!r}")
            for line in resp.iter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                usage = chunk.get("usage") or usage
                if any(c.get("text") for c in chunk.get("choices") or []):
                    text_chunks += 1
                    if first is None:
                        first = now() - t0
        finish = now() - t0
        n_out = (usage or {}).get("completion_tokens") or text_chunks
        details = (usage or {}).get("prompt_tokens_details") or {}
        return (first if first is not None else finish), finish, n_out, details.get("cached_tokens")


def _die_with_parent() -> None:
    """In the child before exec (Linux): get SIGTERM when the worker that started us dies."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def python_module_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
