"""The FastAPI app: routes, auth, model check, disconnect handling. `create_app(engine, settings)`.

`engine` is an `AsyncEngine` (or anything with its generate/abort/shutdown/tokenizer surface). Routes:
POST /v1/completions, POST /v1/chat/completions (JSON or SSE with stream=true), GET /v1/models,
GET /v1/models/{id}, POST /tokenize, POST /detokenize (tokenization.py), POST /flush_cache, GET /health, GET /metrics, and the API docs (/openapi.json, /docs,
/redoc). With API keys configured, every route but /health needs `Authorization: Bearer <key>`
(`public_metrics` / `open_docs` reopen /metrics / the docs); once admin keys exist, /metrics (every
tenant's traffic) needs one of them. Each key is a tenant (tenancy.py): /flush_cache evicts only the
caller's prefixes; an admin key's (or, on a server without keys, anyone's) evicts every tenant's.
Request bodies are bounded in size and read time (limits.py). A client that disconnects aborts its
request (its engine streams are cancelled, pages freed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import Depends, FastAPI, Request
from fastapi.responses import (
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from trellis_jax import __version__
from trellis_jax.serve import requests_prep, responses, tool_calls
from trellis_jax.serve.admission import admission_for
from trellis_jax.serve.costs import Ceilings, CostModel
from trellis_jax.serve.errors import APIError, install_error_handlers
from trellis_jax.serve.generation import Job, engine_error, run_job, stream_job
from trellis_jax.serve.limits import BodyLimits
from trellis_jax.serve.metrics import RequestMetrics, ResponseCounter, ServerMetrics
from trellis_jax.serve.openapi import (
    error_responses,
    install_docs,
    strip_validation_422,
)
from trellis_jax.serve.protocol import ChatCompletionRequest, CompletionRequest
from trellis_jax.serve.responses import LogprobFormatter
from trellis_jax.serve.tenancy import Caller, Tenancy
from trellis_jax.serve.tokenization import add_tokenization_routes
from trellis_jax.serve.unhonoured import refuse_unhonoured

_DISCONNECT_POLL_S = 0.25


@dataclass
class ServerSettings:
    model_name: str = "default"
    api_keys: tuple[str, ...] = ()
    admin_api_keys: tuple[str, ...] = ()  # tenants that may also flush every tenant's cache
    public_metrics: bool = False  # with keys configured, GET /metrics without a key (else a key; admin if any)
    open_docs: bool = False  # with keys configured, /openapi.json, /docs and /redoc without a key
    max_body_bytes: int = 4 * 2**20
    body_read_timeout_s: float = 30.0  # the whole body must arrive within this (slow clients get 408)
    cost: CostModel = field(default_factory=CostModel)
    ceilings: Ceilings | None = None
    shutdown_engine: bool = True  # stop the engine thread when the app shuts down
    max_waiting_requests: int | None = None  # requests queued beyond the running batch (None: admission.py's default)
    tool_call_parser: str = "auto"  # tool_calls/formats.py: auto (from the chat template), hermes, llama3_json

    def __post_init__(self) -> None:  # the middleware is built at the first request: fail at start-up instead
        if self.tool_call_parser not in tool_calls.PARSER_CHOICES:
            raise ValueError(
                f"tool_call_parser must be one of {', '.join(tool_calls.PARSER_CHOICES)}, got {self.tool_call_parser!r}"
            )
        if not self.body_read_timeout_s > 0:
            raise ValueError(f"body_read_timeout_s must be > 0, got {self.body_read_timeout_s!r}")
        if self.max_waiting_requests is not None and self.max_waiting_requests < 0:
            raise ValueError(f"max_waiting_requests must be >= 0, got {self.max_waiting_requests!r}")


def _max_model_len(engine) -> int:
    scheduler = getattr(getattr(engine, "engine", None), "scheduler", None)
    return scheduler.config.max_model_len if scheduler is not None else 2048


def _fingerprint(engine, settings: ServerSettings) -> str:
    """system_fingerprint: the served model, this engine's version and the model's dtype."""
    runner = getattr(getattr(engine, "engine", None), "runner", None)
    dtype = getattr(getattr(runner, "config", None), "dtype", None)
    return responses.fingerprint(settings.model_name, __version__, None if dtype is None else str(dtype))


def _tool_format(tokenizer, parser: str):
    """The served tool-call format, from the flag, the chat template and the special tokens."""
    template = getattr(tokenizer, "chat_template", None)
    specials = {tokenizer.id_to_token(i) for i in getattr(tokenizer, "special_ids", ())}
    return tool_calls.tool_format(parser, getattr(template, "source", None), specials)


def _running_batch(engine):
    scheduler = getattr(getattr(engine, "engine", None), "scheduler", None)
    return (lambda: max(1, len(scheduler.running))) if scheduler is not None else (lambda: 1)


class _Handlers:
    """What the routes share: auth, the model check, and running a job as JSON or SSE."""

    def __init__(self, engine, settings: ServerSettings):
        self.engine, self.settings = engine, settings
        self.tenancy = Tenancy(settings.api_keys, settings.admin_api_keys)
        self.admission = admission_for(engine, settings.max_waiting_requests)
        self.metrics = ServerMetrics(
            engine, settings.cost, settings.ceilings, model=settings.model_name, admission=self.admission
        )
        self.formatter = LogprobFormatter(engine.tokenizer)
        self.max_model_len = _max_model_len(engine)
        self.running_batch = _running_batch(engine)
        self.fingerprint = _fingerprint(engine, settings)
        self.tool_format = _tool_format(engine.tokenizer, settings.tool_call_parser)
        self.started = time.time()

    def caller(self, request: Request) -> Caller:
        return self.tenancy.authenticate(request.headers.get("authorization"))

    def operator(self, request: Request) -> Caller:
        return self.tenancy.authenticate_operator(request.headers.get("authorization"))

    def guard(self, opened: bool = False, *, operators_only: bool = False) -> list:
        """Route dependencies: the API key check (an admin key for `operators_only` once admin keys exist),
        unless the server opened the route to everyone."""
        return [] if opened else [Depends(self.operator if operators_only else self.caller)]

    def errors(self, *statuses: int, operators_only: bool = False) -> dict:
        """OpenAPI responses of a route: `statuses`, and 401 (403) where keys (admin keys) are configured."""
        auth = {401} if self.tenancy.auth_required else set()
        if operators_only and self.tenancy.has_admins:
            auth.add(403)
        return error_responses(*sorted(set(statuses) | auth))

    def check_model(self, name: str) -> None:
        if name != self.settings.model_name:
            raise APIError(
                404,
                f"model {name!r} does not exist; this server serves {self.settings.model_name!r} (see GET /v1/models)",
                param="model",
                code="model_not_found",
            )

    def model_card(self) -> dict:
        return {
            "id": self.settings.model_name,
            "object": "model",
            "created": int(self.started),
            "owned_by": "trellis-jax",
            "max_model_len": self.max_model_len,
        }

    def precheck(self, job: Job) -> None:
        scheduler = getattr(getattr(self.engine, "engine", None), "scheduler", None)
        if scheduler is None:
            return
        for i, prompt in enumerate(job.prompts):
            try:
                scheduler.check_fits(f"{job.request_id}-{i}", prompt)
            except ValueError as error:
                raise APIError(400, str(error), param="prompt") from error

    async def respond(self, job: Job, stream: bool, request: Request):
        """Run `job` under the admission cap (429 past it); the slot is held until the response ends."""
        self.precheck(job)
        slot = self.admission.acquire()
        if stream:
            return self._stream(job, slot)
        try:
            return await self._json(job, request)
        finally:
            slot.release()

    def _stream(self, job: Job, slot) -> StreamingResponse:
        cost, metrics = self.settings.cost, self.metrics
        tracker = RequestMetrics(metrics, cost, self.running_batch)
        events = _tracked_stream(
            stream_job(self.engine, job, tracker, cost, self.formatter), tracker, job.kind, metrics
        )
        return _SlotStream(
            events,
            slot,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _json(self, job: Job, request: Request):
        cost, metrics = self.settings.cost, self.metrics
        tracker = RequestMetrics(metrics, cost, self.running_batch)
        task = asyncio.create_task(run_job(self.engine, job, tracker, cost, self.formatter))
        try:
            body = await _until_done_or_gone(task, request)
        except APIError:
            tracker.finish(job.kind, "error")
            raise
        if body is None:  # the client left: its request was aborted
            metrics.disconnects.inc()
            tracker.finish(job.kind, "disconnected")
            return Response(status_code=499)
        tracker.finish(job.kind, "ok")
        return JSONResponse(body)


def create_app(engine, settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    handlers = _Handlers(engine, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if settings.shutdown_engine:
            await asyncio.to_thread(engine.shutdown)

    app = FastAPI(
        title="Trellis-JAX OpenAI-compatible server", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )  # install_docs serves them, behind the key
    app.state.metrics, app.state.engine, app.state.settings = handlers.metrics, engine, settings
    app.state.started, app.state.admission = handlers.started, handlers.admission
    install_error_handlers(app)
    _add_info_routes(app, handlers)
    _add_generation_routes(app, handlers)
    add_tokenization_routes(app, handlers)
    install_docs(app, handlers.guard(settings.open_docs))
    strip_validation_422(app)
    app.add_middleware(BodyLimits, max_bytes=settings.max_body_bytes, read_timeout_s=settings.body_read_timeout_s)
    known = frozenset(route.path for route in app.routes if "{" not in getattr(route, "path", "{"))
    app.add_middleware(ResponseCounter, metrics=handlers.metrics, known_paths=known)  # outermost: sees 413s too
    return app


def _add_info_routes(app: FastAPI, handlers: _Handlers) -> None:
    @app.get("/health")
    async def health():
        return {"status": "ok", "model": handlers.settings.model_name}

    opened = handlers.settings.public_metrics

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={} if opened else handlers.errors(operators_only=True),
        dependencies=handlers.guard(opened, operators_only=True),
    )
    async def prometheus_metrics():
        """Prometheus text exposition of the server's and the engine's counters (all tenants together)."""
        return Response(generate_latest(handlers.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/flush_cache", responses=handlers.errors(500, 503))
    async def flush_cache(caller: Caller = Depends(handlers.caller)):  # noqa: B008 (FastAPI idiom)
        """Evict the cached prefix pages of the caller's tenant (its cache_salt splits included) that no
        running request holds; an admin key flushes every tenant's. Answers the pages freed."""
        try:
            freed = await handlers.engine.flush_cache(None if caller.is_admin else caller.namespace)
        except Exception as error:  # shutting down: 503; a failed integrity check (logged by the engine): 500
            mapped = engine_error(error)
            if mapped.status == 500:
                mapped = APIError(500, f"flush_cache failed ({type(error).__name__}); see the server log")
            raise mapped from error
        return {"flushed_pages": freed}

    @app.get("/v1/models", responses=handlers.errors(), dependencies=handlers.guard())
    async def list_models():
        return {"object": "list", "data": [handlers.model_card()]}

    @app.get("/v1/models/{model_id:path}", responses=handlers.errors(404), dependencies=handlers.guard())
    async def get_model(model_id: str):
        handlers.check_model(model_id)
        return handlers.model_card()


def _add_generation_routes(app: FastAPI, handlers: _Handlers) -> None:
    engine, model_name = handlers.engine, handlers.settings.model_name
    answers = handlers.errors(400, 404, 408, 413, 429, 500, 503)

    @app.post("/v1/completions", responses=answers)
    async def completions(body: CompletionRequest, request: Request, caller: Caller = Depends(handlers.caller)):  # noqa: B008
        handlers.check_model(body.model)
        refuse_unhonoured(body)

        def prepare():  # tokenizing and compiling a grammar take ms to 100s of ms: off the event loop
            prompts = requests_prep.completion_prompts(body, engine.tokenizer)
            sampling = requests_prep.sampling_params(
                body,
                prompts,
                handlers.max_model_len,
                requested_max=body.max_tokens,
                default_max=requests_prep.COMPLETIONS_DEFAULT_MAX_TOKENS,
                logprobs=body.logprobs,
                vocab_size=engine.tokenizer.vocab_size,
            )
            echo = requests_prep.echo_texts(body, prompts, engine.tokenizer) if body.echo else None
            return prompts, sampling, echo

        prompts, sampling, echo = await asyncio.to_thread(prepare)
        job = Job(
            "completions",
            f"cmpl-{uuid.uuid4().hex}",
            model_name,
            int(time.time()),
            prompts,
            sampling,
            Tenancy.namespace(caller.namespace, body.cache_salt),
            body.include_usage,
            body.logprobs is not None,
            echo=echo,
            fingerprint=handlers.fingerprint,
        )
        return await handlers.respond(job, body.stream, request)

    @app.post("/v1/chat/completions", responses=answers)
    async def chat_completions(
        body: ChatCompletionRequest, request: Request, caller: Caller = Depends(handlers.caller)
    ):  # noqa: B008
        handlers.check_model(body.model)
        refuse_unhonoured(body)
        logprobs = (body.top_logprobs or 0) if body.logprobs else None

        def prepare():  # the template, tokenizing and compiling grammars: off the event loop
            tools = tool_calls.plan_tools(body.tools, body.tool_choice, handlers.tool_format, body.parallel_tool_calls)
            prompts = [requests_prep.chat_prompt(body, engine.tokenizer, handlers.tool_format)]
            sampling = requests_prep.sampling_params(
                body,
                prompts,
                handlers.max_model_len,
                requested_max=body.max_completion_tokens or body.max_tokens,
                default_max=None,
                logprobs=logprobs,
                vocab_size=engine.tokenizer.vocab_size,
            )
            sampling = tool_calls.constrained(
                sampling, tools, skip_special_tokens_given=body.skip_special_tokens is not None
            )
            return tools, prompts, sampling

        tools, prompts, sampling = await asyncio.to_thread(prepare)
        job = Job(
            "chat",
            f"chatcmpl-{uuid.uuid4().hex}",
            model_name,
            int(time.time()),
            prompts,
            sampling,
            Tenancy.namespace(caller.namespace, body.cache_salt),
            body.include_usage,
            body.logprobs,
            fingerprint=handlers.fingerprint,
            tools=tools,
        )
        return await handlers.respond(job, body.stream, request)


class _SlotStream(StreamingResponse):
    """A stream that gives its admission slot back however it ends: finished, failed, or the client gone
    before the first event (when the body generator never starts, its own `finally` never runs)."""

    def __init__(self, content, slot, **kwargs):
        super().__init__(content, **kwargs)
        self.slot = slot

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


async def _until_done_or_gone(task: asyncio.Task, request: Request):
    """The task's result, or None after cancelling it if the client disconnects first."""
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return None
    except asyncio.CancelledError:
        task.cancel()
        raise


async def _tracked_stream(
    events: AsyncIterator[str], tracker: RequestMetrics, kind: str, metrics
) -> AsyncIterator[str]:
    status = "disconnected"
    try:
        async for event in events:
            yield event
        status = "ok"
    finally:
        if status == "disconnected":
            metrics.disconnects.inc()
        await events.aclose()
        tracker.finish(kind, status)
