"""Run one API request through the engine: its prompts (one per completions prompt, one for chat) each
yield n choices; choice index = prompt index * n + completion index.

`run_job` collects everything for a plain JSON response; `stream_job` yields SSE events. Both merge
the prompts' delta streams, record metrics as deltas arrive, and on cancellation (client gone,
shutdown) cancel every prompt's stream, which aborts its engine request and frees its pages.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from trellis_jax.serve import responses
from trellis_jax.serve.costs import CostModel
from trellis_jax.serve.errors import APIError, error_body
from trellis_jax.serve.metrics import RequestMetrics
from trellis_jax.serve.tool_calls import ChoiceStream, ToolPlan
from trellis_jax.serve.tool_calls import message as tool_message

_DONE = object()


@dataclass
class Job:
    kind: str  # "completions" | "chat"
    request_id: str
    model: str
    created: int
    prompts: list[list[int]]
    sampling: object  # SamplingParams
    namespace: str
    include_usage: bool = False
    logprobs: bool = False
    echo: list[str] | None = None  # completions with echo: each prompt's text, prepended to its choices' text
    fingerprint: str | None = None  # system_fingerprint of every response body and chunk
    tools: ToolPlan | None = None  # chat: parse tool calls out of each choice's text (tool_calls/)


@dataclass
class _Choice:
    text: list[str] = field(default_factory=list)
    num_tokens: int = 0
    logprobs: list = field(default_factory=list)
    finish_reason: str | None = None
    cached: int = 0


class _Progress:
    """Per-prompt prompt/cached token counts and per-choice state, filled in as deltas arrive."""

    def __init__(self, job: Job, tracker: RequestMetrics):
        self.job = job
        self.tracker = tracker
        self.n = job.sampling.n
        self.choices = [_Choice() for _ in range(len(job.prompts) * self.n)]
        self.prompt_tokens = [len(p) for p in job.prompts]
        self._prompt_seen: set[int] = set()

    def apply(self, group: int, delta) -> int:
        choice = self.choices[group * self.n + delta.index]
        choice.text.append(delta.text)
        choice.num_tokens = delta.num_output_tokens
        choice.logprobs.extend(delta.logprobs or ())
        choice.finish_reason = delta.finish_reason or choice.finish_reason
        choice.cached = delta.num_cached_tokens
        if group not in self._prompt_seen and delta.token_ids:
            self._prompt_seen.add(group)
            self.tracker.on_prompt_done(delta.num_prompt_tokens, delta.num_cached_tokens)
        self.tracker.on_delta(group, delta)
        return group * self.n + delta.index

    def usage(self, cost: CostModel) -> dict:
        groups = []
        for g, prompt_tokens in enumerate(self.prompt_tokens):
            cached = min(c.cached for c in self.choices[g * self.n : (g + 1) * self.n])
            groups.append((prompt_tokens, cached))
        return responses.usage(groups, sum(c.num_tokens for c in self.choices), cost)


async def _merged(engine, job: Job) -> AsyncIterator[tuple[int, object]]:
    """(prompt index, delta) from every prompt's stream as they come; cancelling cancels them all."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(group: int, prompt: list[int]) -> None:
        try:
            rid = job.request_id if len(job.prompts) == 1 else f"{job.request_id}-{group}"
            async for delta in engine.generate(prompt, job.sampling, request_id=rid, namespace=job.namespace):
                queue.put_nowait((group, delta))
        except Exception as error:  # surfaced to the consumer
            queue.put_nowait((group, error))
        finally:
            queue.put_nowait((group, _DONE))

    tasks = [asyncio.create_task(pump(g, p)) for g, p in enumerate(job.prompts)]
    try:
        remaining = len(tasks)
        while remaining:
            group, item = await queue.get()
            if item is _DONE:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield group, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def engine_error(error: Exception) -> APIError:
    """Map an exception from the engine to the HTTP error the client should see."""
    name = type(error).__name__
    if name == "EngineShutDown":
        return APIError(503, "the server is shutting down; retry on another instance")
    if name == "FollowerLost":  # a multi-process job lost a process (runner/multihost.py): no step can run
        return APIError(503, f"a process of this multi-process job is gone ({error}); the job must be restarted")
    if isinstance(error, ValueError):  # RequestRejected, bad prompt or parameters
        return APIError(400, str(error))
    return APIError(500, f"generation failed ({name}); see the server log")


async def run_job(engine, job: Job, tracker: RequestMetrics, cost: CostModel, formatter) -> dict:
    progress = _Progress(job, tracker)
    try:
        async for group, delta in _merged(engine, job):
            progress.apply(group, delta)
    except APIError:
        raise
    except Exception as error:
        raise engine_error(error) from error
    choices = [
        _choice_json(job, i, _echoed(job, i) + "".join(c.text), c.logprobs, c.finish_reason, formatter)
        for i, c in enumerate(progress.choices)
    ]
    body = responses.chat_body if job.kind == "chat" else responses.completion_body
    return body(job.request_id, job.model, job.created, choices, progress.usage(cost), job.fingerprint)


def _echoed(job: Job, index: int) -> str:
    """The prompt text choice `index` starts with: its prompt's with echo, else nothing."""
    return job.echo[index // job.sampling.n] if job.echo else ""


def _choice_json(job: Job, index: int, text: str, logprobs, finish_reason, formatter) -> dict:
    if job.kind == "chat":
        message = {"role": "assistant", "content": text}
        if job.tools is not None:
            message, finish_reason = tool_message(job.tools, text, finish_reason)
        return {
            "index": index,
            "message": message,
            "logprobs": formatter.chat(logprobs) if job.logprobs else None,
            "finish_reason": finish_reason,
        }
    return {
        "index": index,
        "text": text,
        "logprobs": formatter.completions(logprobs) if job.logprobs else None,
        "finish_reason": finish_reason,
    }


def sse(payload) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def stream_job(engine, job: Job, tracker: RequestMetrics, cost: CostModel, formatter) -> AsyncIterator[str]:
    """SSE events; an engine error mid-stream becomes one error event, then [DONE]."""
    progress = _Progress(job, tracker)
    offsets = [0] * len(progress.choices)

    def chunk(choices, usage_dict=None) -> dict:
        make = responses.chat_chunk if job.kind == "chat" else responses.completion_chunk
        return make(job.request_id, job.model, job.created, choices, usage_dict, job.fingerprint)

    first = _first_chunk_choices(job, len(progress.choices))
    if first:
        yield sse(chunk(first))
    calls = [ChoiceStream(job.tools, i) for i in range(len(offsets))] if job.tools is not None else None
    try:
        async for group, delta in _merged(engine, job):
            index = progress.apply(group, delta)
            if calls is not None:
                logprobs = formatter.chat(delta.logprobs) if job.logprobs and delta.logprobs else None
                for choice in calls[index].choices(delta.text, delta.finish_reason, logprobs):
                    yield sse(chunk([choice]))
                continue
            if not delta.text and not delta.finish_reason and not (job.logprobs and delta.logprobs):
                continue
            choice = _chunk_choice(job, index, delta, formatter, offsets[index])
            offsets[index] += len(delta.text)
            yield sse(chunk([choice]))
    except Exception as error:
        api_error = error if isinstance(error, APIError) else engine_error(error)
        yield sse(error_body(api_error.status, api_error.message))
        yield "data: [DONE]\n\n"
        return
    if job.include_usage:
        yield sse(chunk([], progress.usage(cost)))
    yield "data: [DONE]\n\n"


def _first_chunk_choices(job: Job, count: int) -> list[dict]:
    """What a stream opens with: chat's role (once per choice, as OpenAI does); completions' echoed prompt."""
    if job.kind == "chat":
        return [
            {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
            for i in range(count)
        ]
    if job.echo:
        return [{"index": i, "text": _echoed(job, i), "logprobs": None, "finish_reason": None} for i in range(count)]
    return []


def _chunk_choice(job: Job, index: int, delta, formatter, text_offset: int) -> dict:
    logprobs = delta.logprobs or []
    if job.kind == "chat":
        return {
            "index": index,
            "delta": {"content": delta.text} if delta.text else {},
            "logprobs": formatter.chat(logprobs) if job.logprobs else None,
            "finish_reason": delta.finish_reason,
        }
    return {
        "index": index,
        "text": delta.text,
        "logprobs": formatter.completions(logprobs, text_offset) if job.logprobs else None,
        "finish_reason": delta.finish_reason,
    }
