"""Hugging Face transformers (torch, CPU or GPU) as a peer: same weights, greedy, one request at a time.

The weights come from the same GGUF (`gguf_file=`, transformers dequantizes it to float32), or from a
config with random weights (GPU mode). `reuse=True` applies transformers' documented prompt-cache reuse
("Re-use Cache to continue generation"): after each request its prompt's `DynamicCache` is kept; the next
request deep-copies the stored cache with the longest common token prefix, crops it to that prefix and
passes it as `past_key_values`, so only the rest of the prompt is prefilled. Stored caches are bounded
by `store_bytes` (oldest dropped first). KV bytes = stored caches + the live cache of the running request.
"""

from __future__ import annotations

import copy
import os
from collections import OrderedDict

from ..requests import common_prefix
from .base import MemoryView, RequestResult, Runner, now


class _FirstTokenClock:
    """A generate() streamer that only records when the first new token arrives."""

    def __init__(self):
        self.calls = 0
        self.first_token_s: float | None = None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:  # call 1 is the prompt, call 2 the first new token
            self.first_token_s = now()

    def end(self) -> None:
        pass


class HFRunner(Runner):
    def __init__(
        self,
        model_loader,
        *,
        reuse: bool,
        device: str = "cpu",
        threads: int | None = None,
        store_bytes: int = 1 << 30,
        name: str | None = None,
    ):
        self._load = model_loader
        self.reuse = reuse
        self.device = device
        self.threads = threads
        self.store_bytes = store_bytes
        self.name = name or ("hf-reuse" if reuse else "hf")
        self.description = (
            "transformers, prompt-cache reuse (DynamicCache copy of the longest stored prefix)"
            if reuse
            else "transformers, no cache reuse"
        )
        self._store: OrderedDict[tuple, object] = OrderedDict()
        self._live_tokens = 0
        self.model = None

    def start(self) -> None:
        import torch
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # keep the harness log readable
        hf_logging.set_verbosity_error()
        if self.threads:
            torch.set_num_threads(self.threads)
        self.model = self._load()
        self.model.eval()
        kv = self.model.config
        head_dim = getattr(kv, "head_dim", None) or kv.hidden_size // kv.num_attention_heads
        dtype_bytes = next(self.model.parameters()).element_size()
        self._bytes_per_token = 2 * kv.num_hidden_layers * kv.num_key_value_heads * head_dim * dtype_bytes
        self._generate([1, 2, 3, 4], 2)  # warm-up

    def reset(self) -> None:
        self._store.clear()

    def run_wave(self, requests, t0) -> list[RequestResult]:
        arrival = now() - t0
        results = []
        for request in requests:
            ids = request.prompt_token_ids
            cache, reused = self._cache_for(ids)
            self._live_tokens = len(ids) + request.max_tokens
            clock = _FirstTokenClock()
            out = self._generate(ids, request.max_tokens, cache=cache, streamer=clock)
            finish = now() - t0
            new_ids = out.sequences[0, len(ids) :].tolist()
            if self.reuse:
                self._keep(tuple(ids), out.past_key_values)
            self._live_tokens = 0
            results.append(
                RequestResult(
                    request.id,
                    request.wave,
                    arrival,
                    (clock.first_token_s or now()) - t0,
                    finish,
                    len(ids),
                    len(new_ids),
                    len(ids) - reused,
                    new_ids,
                )
            )
        return results

    def memory(self) -> MemoryView:
        stored = sum(self._cache_tokens(c) for c in list(self._store.values())) * getattr(self, "_bytes_per_token", 0)
        return MemoryView(kv_bytes=stored + self._live_tokens * getattr(self, "_bytes_per_token", 0), pid=os.getpid())

    def _generate(self, ids, max_tokens, *, cache=None, streamer=None):
        import torch

        input_ids = torch.tensor([ids], device=self.device)
        with torch.inference_mode():
            return self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                past_key_values=cache,
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                do_sample=False,
                streamer=streamer,
                return_dict_in_generate=True,
                pad_token_id=0,
            )

    def _cache_for(self, ids):
        """The deep-copied stored cache with the longest common prefix (cropped to it), and its length."""
        if not self.reuse or not self._store:
            return None, 0
        key, shared = max(((k, common_prefix(ids, k)) for k in self._store), key=lambda kv: kv[1])
        shared = min(shared, len(ids) - 1)  # generate needs at least one uncached prompt token
        if shared < 1:
            return None, 0
        self._store.move_to_end(key)
        cache = copy.deepcopy(self._store[key])
        cache.crop(-(self._cache_tokens(cache) - shared))
        return cache, shared

    def _keep(self, ids: tuple, cache) -> None:
        cache.crop(-(self._cache_tokens(cache) - len(ids)))
        self._store[ids] = cache
        while (
            len(self._store) > 1
            and sum(map(self._cache_tokens, self._store.values())) * self._bytes_per_token > self.store_bytes
        ):
            self._store.popitem(last=False)

    @staticmethod
    def _cache_tokens(cache) -> int:
        return cache.get_seq_length()


def gguf_model_loader(gguf_path):
    """A loader for the HF model dequantized from a GGUF (float32 on CPU)."""

    def load():
        import torch
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )

    return load


def dir_model_loader(dir, dtype: str = "bfloat16", device: str = "cuda"):
    """A loader for an HF model directory (GPU mode: random Llama-3.2-1B-shaped weights)."""

    def load():
        import torch
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(dir), dtype=getattr(torch, dtype)).to(device)

    return load
