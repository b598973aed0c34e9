"""Trellis-JAX as a system under test: offline (`LLM`'s engine, stepped here) and over HTTP.

Offline: `LLM(model, disable_radix_cache=not cache, **options)` is built once (compiled during `start`).
A wave's requests are all added to the engine, then `engine.step()` runs until they finish; the
streaming deltas give each request's first-token and finish times and `num_cached_tokens` (prompt
tokens skipped). Greedy with `ignore_eos`, so every request generates exactly `max_tokens`.
`reset()` evicts every unlocked radix-tree page (the next run starts cold). KV bytes = pages in use
(all non-free pages but the sink) x bytes per page; the pool itself is allocated up front.
Cache hit rate = cached prompt tokens / prompt tokens over the run (scheduler counters).
HTTP: `python -m trellis_jax.serve` on a free port, driven by `OpenAIHTTPRunner` with `ignore_eos`; its
`reset()` posts /flush_cache, so each HTTP run also starts with a cold cache.
"""

from __future__ import annotations

import os

from .base import MemoryView, RequestResult, Runner, now
from .openai_http import OpenAIHTTPRunner, ServerProcess, python_module_command


class TrellisRunner(Runner):
    def __init__(self, gguf_path, *, cache: bool, options: dict, name: str | None = None):
        self.gguf_path = gguf_path
        self.cache = cache
        self.options = dict(options)
        self.name = name or ("trellis" if cache else "trellis-nocache")
        self.description = "Trellis-JAX offline engine, radix cache " + ("on" if cache else "off")
        self.precision = None  # the model dtype the engine runs ("auto" resolved), known once started
        self.llm = None
        self._ids = 0
        self._stats_at_reset = None

    def start(self, llm=None) -> None:
        """Build the LLM (or adopt `llm`, e.g. one over a fake engine in tests) and warm it up."""
        from trellis_jax.engine.api import LLM, SamplingParams

        self._sampling = SamplingParams
        self.llm = llm or LLM(
            model=str(self.gguf_path) if self.gguf_path else None, disable_radix_cache=not self.cache, **self.options
        )
        self.llm.generate([[1, 2, 3, 4]], SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True))
        self.precision = getattr(getattr(self.llm.engine.runner, "config", None), "dtype", None)
        if self.precision:
            self.description += f", {self.precision} model"
            if self.options.get("dtype", "auto") == "auto":
                self.description += " (dtype auto)"

    @property
    def _radix(self):
        return self.llm.engine.scheduler.kv.cache

    def reset(self) -> None:
        self._radix.evict(self._radix.num_evictable_pages)
        self._stats_at_reset = _counters(self.llm.engine.scheduler.stats)

    def run_wave(self, requests, t0) -> list[RequestResult]:
        engine = self.llm.engine
        arrival = now() - t0
        by_id = {}
        for request in requests:
            self._ids += 1
            request_id = f"bench-{self._ids}"
            sampling = self._sampling(temperature=0.0, max_tokens=request.max_tokens, ignore_eos=True)
            engine.add_request(request_id, list(request.prompt_token_ids), sampling)
            by_id[request_id] = {"request": request, "first": None, "finish": None, "cached": 0, "ids": []}
        pending = set(by_id)
        while pending:
            for delta in engine.step():
                entry = by_id.get(delta.request_id)
                if entry is None:
                    continue
                if delta.token_ids and entry["first"] is None:
                    entry["first"] = now() - t0
                entry["ids"] += list(delta.token_ids)
                entry["cached"] = delta.num_cached_tokens
                if delta.finished:
                    entry["finish"] = now() - t0
                    pending.discard(delta.request_id)
        engine.pop_finished()
        return [self._result(e, arrival) for e in by_id.values()]

    @staticmethod
    def _result(entry, arrival) -> RequestResult:
        request = entry["request"]
        return RequestResult(
            request.id,
            request.wave,
            arrival,
            entry["first"] or entry["finish"],
            entry["finish"],
            request.num_prompt_tokens,
            len(entry["ids"]),
            request.num_prompt_tokens - entry["cached"],
            entry["ids"],
        )

    def memory(self) -> MemoryView:
        if self.llm is None:
            return MemoryView(kv_bytes=None, pid=os.getpid())
        pool = getattr(self.llm.engine.runner, "kv_pool", None)
        if pool is None:
            return MemoryView(kv_bytes=None, pid=os.getpid())
        radix = self._radix
        in_use = radix.num_pages - radix.num_free_pages - 1
        return MemoryView(kv_bytes=in_use * pool.bytes_per_page, pid=os.getpid())

    def stats(self) -> dict:
        now_counts = _counters(self.llm.engine.scheduler.stats)
        before = self._stats_at_reset or {k: 0 for k in now_counts}
        run = {k: now_counts[k] - before[k] for k in now_counts}
        prompt = run["num_prompt_tokens"]
        return {
            "cache_hit_rate": run["num_cached_prompt_tokens"] / prompt if prompt else 0.0,
            "prefill_tokens_computed_by_scheduler": run["num_prefill_tokens_computed"],
            "preemptions": run["num_preemptions"],
        }


def _counters(stats) -> dict:
    return {
        k: getattr(stats, k)
        for k in ("num_prompt_tokens", "num_cached_prompt_tokens", "num_prefill_tokens_computed", "num_preemptions")
    }


def trellis_http_runner(gguf_path, *, cache: bool, port: int, server_args: list[str], log_dir) -> OpenAIHTTPRunner:
    args = ["--port", str(port), *server_args] + ([] if cache else ["--disable-radix-cache"])
    if gguf_path:
        args += ["--model", str(gguf_path)]
    server = ServerProcess(
        python_module_command("trellis_jax.serve", *args), port, os.path.join(log_dir, f"trellis-serve-{port}.log")
    )
    return OpenAIHTTPRunner(
        server,
        name="trellis-http" if cache else "trellis-http-nocache",
        description="Trellis-JAX OpenAI server over HTTP, radix cache " + ("on" if cache else "off"),
        extra_body={"ignore_eos": True},
        flush_path="/flush_cache",
    )
