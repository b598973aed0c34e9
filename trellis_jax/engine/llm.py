"""`LLM`: offline generation. `LLM(model=None, **engine options).generate(prompts, sampling_params)`.

Runs the same Engine as the server, synchronously on the caller's thread, until every request is done.
Outputs come back in the order of the prompts.

Lifecycle: `close()` (or leaving a `with LLM(...) as llm:` block) closes the engine, which writes the
cached prefixes to its page store if it has one (Engine.close). Closing twice does nothing; generate after
close raises RuntimeError. An LLM made with `from_engine` closes that engine too.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from tqdm.auto import tqdm

from trellis_jax.engine.config import EngineConfig
from trellis_jax.engine.engine import Engine
from trellis_jax.engine.outputs import RequestOutput
from trellis_jax.engine.prompts import split_prompts, to_token_ids
from trellis_jax.engine.sampling_params import SamplingParams


class LLM:
    def __init__(self, model: str | None = None, **options) -> None:
        """Load `model` (None = the default model) and build the engine; options: see EngineConfig."""
        from trellis_jax.engine.builder import build_engine

        self.config = EngineConfig.from_options(model=model, **options)
        self.engine, self.tokenizer = build_engine(self.config)
        self._ids = itertools.count()
        self._closed = False

    @classmethod
    def from_engine(cls, engine: Engine, tokenizer) -> LLM:
        """Wrap an existing engine (tests, fakes)."""
        llm = cls.__new__(cls)
        llm.config, llm.engine, llm.tokenizer, llm._ids = None, engine, tokenizer, itertools.count()
        llm._closed = False
        return llm

    def close(self) -> None:
        """Close the engine (persisting the KV page store, if any). Idempotent; generate is refused after."""
        if not self._closed:
            self._closed = True
            self.engine.close()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def generate(
        self,
        prompts,
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        namespace: str = "",
        use_tqdm: bool = False,
    ) -> list[RequestOutput]:
        """Generate for one prompt or a list (str, token ids, or chat messages); one output per prompt.

        Every prompt is validated and tokenized before any runs: a bad one raises and nothing is queued.
        """
        if self._closed:
            raise RuntimeError("this LLM is closed; make a new one to generate again")
        prompts = split_prompts(prompts)
        params = self._per_prompt(sampling_params, len(prompts))
        token_ids = [to_token_ids(p, self.tokenizer) for p in prompts]
        ids = [f"gen-{next(self._ids)}" for _ in prompts]
        for request_id, tokens in zip(ids, token_ids):
            self.engine.scheduler.check_fits(request_id, tokens)
        try:
            for request_id, tokens, sp in zip(ids, token_ids, params):
                self.engine.add_request(request_id, tokens, sp, namespace=namespace)
            return self._run(ids, use_tqdm)
        except BaseException:
            for request_id in ids:
                self.engine.abort(request_id)
            self.engine.pop_finished()
            raise

    def _run(self, ids: list[str], use_tqdm: bool) -> list[RequestOutput]:
        done: dict[str, RequestOutput] = {}
        with tqdm(total=len(ids), desc="generating", unit="req", disable=not use_tqdm) as bar:
            while len(done) < len(ids):
                self.engine.step()
                self.engine.pop_failures()  # they end with finish_reason "abort"; isolation.py logged why
                for output in self.engine.pop_finished():
                    done[output.request_id] = output
                    bar.update(1)
        return [done[i] for i in ids]

    @staticmethod
    def _per_prompt(sampling_params, count: int) -> list[SamplingParams]:
        if sampling_params is None:
            return [SamplingParams()] * count
        if isinstance(sampling_params, SamplingParams):
            return [sampling_params] * count
        params = list(sampling_params)
        if len(params) != count:
            raise ValueError(f"got {len(params)} SamplingParams for {count} prompts")
        return params
