"""The engine's public API (what the server, the batch job and users import).

    from trellis_jax.engine.api import LLM, AsyncEngine, SamplingParams

    llm = LLM(model=None, page_size=16, kv_memory="1GiB", max_num_seqs=32, max_num_batched_tokens=512,
              eviction_policy="lru", schedule_policy="lpm", disable_radix_cache=False, deterministic=False)
    outputs = llm.generate(["Hello", [{"role": "user", "content": "Hi"}], [1, 2, 3]],
                           SamplingParams(temperature=0, max_tokens=32))
    outputs[0].text, .token_ids, .logprobs, .finish_reason, .num_prompt_tokens, .num_cached_tokens
    outputs[0].outputs  # the n CompletionOutputs (index, text, token_ids, logprobs, finish_reason, ...)
    llm.close()  # or `with LLM(...) as llm:`; persists the KV page store, if any; generate is refused after

    engine = AsyncEngine.from_options(model=None, **same options)
    async for delta in engine.generate(prompt_or_token_ids_or_messages, SamplingParams(...),
                                       request_id="r1", namespace="tenant-a"):
        delta.index, delta.text, delta.token_ids, delta.logprobs, delta.finish_reason,
        delta.num_prompt_tokens, delta.num_cached_tokens, delta.num_output_tokens
    engine.abort("r1"); engine.shutdown()

Options: EngineConfig (config.py). Sampling: SamplingParams (sampling_params.py), including
`SamplingParams.from_openai(body)`. Outputs: outputs.py. Finish reasons: "stop", "length", "abort".
Errors: RequestRejected (a ValueError) for a request that can never run here (too long for the
context cap or the KV pool); FieldRangeError (a ValueError naming the field and its range) for a
number the step cannot carry (trellis_jax/field_ranges.py); ValueError for other bad parameters or
prompts; RequestFailed (a ValueError) from the stream of a request a step could not run: it alone is
aborted, the others run on (isolation.py). In LLM.generate such a request ends with "abort".
"""

from trellis_jax.engine.async_engine import AsyncEngine, EngineShutDown
from trellis_jax.engine.config import EngineConfig
from trellis_jax.engine.engine import Engine, RequestFailed
from trellis_jax.engine.llm import LLM
from trellis_jax.engine.outputs import FINISH_REASONS, CompletionOutput, OutputDelta, RequestOutput, TokenLogprob
from trellis_jax.engine.sampling_params import SamplingParams
from trellis_jax.engine.structured import StructuredOutput
from trellis_jax.field_ranges import FieldRangeError
from trellis_jax.scheduler import RequestRejected

__all__ = [
    "AsyncEngine",
    "CompletionOutput",
    "Engine",
    "EngineConfig",
    "EngineShutDown",
    "FINISH_REASONS",
    "FieldRangeError",
    "LLM",
    "OutputDelta",
    "RequestFailed",
    "RequestOutput",
    "RequestRejected",
    "SamplingParams",
    "StructuredOutput",
    "TokenLogprob",
]
