"""llama.cpp through llama-cpp-python as a peer: one request at a time, greedy, streamed.

Modes: `ram_cache=False` is llama.cpp's own prefix reuse (a new prompt reuses the longest common prefix
with the tokens currently in its context, i.e. only the previous request's); `ram_cache=True` also sets
a `LlamaRAMCache` (a full state copy saved after every completion and restored on the longest prefix
hit), bounded by `ram_cache_bytes`. EOS/EOG tokens get a -inf logit bias so every request generates
exactly `max_tokens` tokens, as on the other systems. Prompt tokens actually evaluated are counted by
wrapping `Llama.eval` (calls before the first streamed token are the prefill). KV bytes = the context's
KV cache (n_ctx x layers x 2 x kv width, f16, allocated up front) + the RAM cache's current size.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import MemoryView, RequestResult, Runner, now

_F16_BYTES = 2
# Peers' threads unless a flag says otherwise: every core, as Trellis' XLA thread pool takes them all.
DEFAULT_THREADS = os.cpu_count() or 1
THREADS_HELP = (
    f"llama.cpp's threads (and transformers' in `python -m tools.bench`); default os.cpu_count(), "
    f"{DEFAULT_THREADS} here, the cores Trellis' XLA uses. Pass 1 where other jobs share the cores: llama.cpp's "
    "threads meet at a barrier after every op and stall while a neighbour holds a core"
)


class LlamaCppRunner(Runner):
    def __init__(
        self,
        gguf_path,
        *,
        ram_cache: bool,
        threads: int,
        n_ctx: int = 2048,
        ram_cache_bytes: int = 2 << 30,
        ban_token_ids=(0, 1, 2),
        name: str | None = None,
    ):
        self.gguf_path = gguf_path
        self.ram_cache = ram_cache
        self.threads = threads
        self.n_ctx = n_ctx
        self.ram_cache_bytes = ram_cache_bytes
        self.logit_bias = {int(t): -1e9 for t in ban_token_ids}
        quant = next((q for q in ("F32", "BF16") if f".{q}." in Path(gguf_path).name), "Q4_1")
        self.name = name or f"llama.cpp-{quant}" + ("-ramcache" if ram_cache else "")
        self.description = f"llama-cpp-python, {quant} GGUF, " + (
            "prefix reuse + LlamaRAMCache" if ram_cache else "prefix reuse of the previous prompt"
        )
        self._evaluated = 0
        self.llm = None

    def start(self) -> None:
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(self.gguf_path),
            n_ctx=self.n_ctx,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            n_batch=512,
            seed=0,
            verbose=False,
        )
        inner_eval = self.llm.eval

        def counting_eval(tokens):
            self._evaluated += len(tokens)
            return inner_eval(tokens)

        self.llm.eval = counting_eval  # instance attribute shadows the method inside generate()
        self._context_kv_bytes = self._kv_bytes_of_context()
        for _ in self._complete([1, 2, 3, 4], 2):  # warm-up
            pass
        self.reset()

    def reset(self) -> None:
        from llama_cpp import LlamaRAMCache

        self.llm.reset()  # forget the tokens in context: no reuse across runs
        self.llm.set_cache(LlamaRAMCache(capacity_bytes=self.ram_cache_bytes) if self.ram_cache else None)

    def run_wave(self, requests, t0) -> list[RequestResult]:
        arrival = now() - t0
        results = []
        for request in requests:
            start_count = self._evaluated
            first_token_s, prefill = None, None
            for _ in self._complete(request.prompt_token_ids, request.max_tokens):
                if first_token_s is None:
                    first_token_s = now() - t0
                    prefill = self._evaluated - start_count
            decode_evals = self._evaluated - start_count - (prefill or 0)
            results.append(
                RequestResult(
                    request.id,
                    request.wave,
                    arrival,
                    first_token_s if first_token_s is not None else now() - t0,
                    now() - t0,
                    request.num_prompt_tokens,
                    decode_evals + 1,
                    prefill,
                )
            )
        return results

    def memory(self) -> MemoryView:
        cache = self.llm.cache if self.llm is not None else None
        cached = cache.cache_size if cache is not None else 0
        return MemoryView(kv_bytes=getattr(self, "_context_kv_bytes", 0) + cached, pid=os.getpid())

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None

    def _complete(self, prompt_ids, max_tokens):
        return self.llm.create_completion(
            prompt=list(prompt_ids), max_tokens=max_tokens, temperature=0.0, logit_bias=self.logit_bias, stream=True
        )

    def _kv_bytes_of_context(self) -> int:
        meta = self.llm.metadata
        arch = meta.get("general.architecture", "llama")
        layers = int(meta[f"{arch}.block_count"])
        heads = int(meta[f"{arch}.attention.head_count"])
        kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads))
        head_dim = int(meta[f"{arch}.embedding_length"]) // heads
        return self.llm.n_ctx() * layers * 2 * kv_heads * head_dim * _F16_BYTES
