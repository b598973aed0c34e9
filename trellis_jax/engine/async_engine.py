"""`AsyncEngine`: the Engine on its own thread, streamed to asyncio callers (the HTTP server).

    engine = AsyncEngine.from_options(model=None, **engine options)   # or AsyncEngine(Engine, tokenizer)
    async for delta in engine.generate(prompt, SamplingParams(...), request_id="r1", namespace="tenant"):
        ...  # OutputDelta: new text / token ids / logprobs of completion delta.index; finish_reason on the last
    engine.abort("r1")       # thread-safe, returns at once; the stream ends with finish_reason "abort"
    freed = await engine.flush_cache()   # evict every cached page no request holds, between steps
    freed = await engine.flush_cache("key1")   # ... only that namespace's (and its nested ones')
    engine.shutdown()

The device loop runs on a daemon thread, so the event loop is never blocked by a step. Requests and
aborts reach it through a queue and are applied between steps; deltas come back through
`loop.call_soon_threadsafe`. A prompt is a str (special tokens parsed), token ids, or chat messages.
Errors (a bad prompt, a request that can never fit: RequestRejected, a ValueError) are raised from the
first `__anext__`, before any delta. Leaving the `async for` early (client gone) aborts the request.
If one request's share of a step cannot run, only its stream raises (engine.RequestFailed, a ValueError);
the step runs on without it. If a step fails otherwise, every open stream raises that exception and all
requests are aborted (pages freed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import uuid
from collections.abc import AsyncIterator

from trellis_jax.engine.engine import Engine
from trellis_jax.engine.outputs import OutputDelta
from trellis_jax.engine.prompts import Prompt, to_token_ids
from trellis_jax.engine.sampling_params import SamplingParams

logger = logging.getLogger(__name__)
_IDLE_WAIT_S = 0.5
_PREFETCH_WAIT_S = 0.01  # while a restart's prefetch reads pages, the idle loop places them this often


class EngineShutDown(RuntimeError):
    """The engine thread stopped before the request finished."""


class _Stream:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()

    def put(self, item) -> bool:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
            return True
        except RuntimeError:  # the caller's loop is closed
            return False


class AsyncEngine:
    def __init__(self, engine: Engine, tokenizer, *, check_integrity_when_idle: bool = True) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.check_integrity_when_idle = check_integrity_when_idle
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False
        if getattr(engine, "prefetching", False):
            self._ensure_thread()  # the idle loop puts a restart's prefetched pages onto the device at once

    @classmethod
    def from_options(cls, model: str | None = None, **options) -> AsyncEngine:
        from trellis_jax.engine.builder import build_engine
        from trellis_jax.engine.config import EngineConfig

        config = EngineConfig.from_options(model=model, **options)
        engine, tokenizer = build_engine(config)
        return cls(engine, tokenizer, check_integrity_when_idle=config.check_integrity_when_idle)

    # ---- caller side (any thread / the event loop) -------------------------------------------------
    async def generate(
        self,
        prompt: Prompt,
        sampling: SamplingParams | None = None,
        request_id: str | None = None,
        namespace: str = "",
        priority: int = 0,
    ) -> AsyncIterator[OutputDelta]:
        sampling = sampling or SamplingParams()
        request_id = request_id or uuid.uuid4().hex
        token_ids = to_token_ids(prompt, self.tokenizer)
        self.engine.scheduler.check_fits(request_id, token_ids)
        stream = _Stream(asyncio.get_running_loop())
        with self._lock:
            if self._stopped:
                raise EngineShutDown("the engine is shut down")
            if request_id in self._streams:
                raise ValueError(f"request id {request_id!r} is already in flight")
            self._streams[request_id] = stream
        self._ensure_thread()
        self._commands.put(("add", request_id, token_ids, sampling, namespace, priority))
        remaining = sampling.n
        try:
            while remaining:
                item = await stream.queue.get()
                if isinstance(item, BaseException):
                    raise item
                remaining -= item.finished
                yield item
        finally:
            with self._lock:
                self._streams.pop(request_id, None)
            if remaining:
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        """Abort a request at any stage (no-op if unknown or finished). Thread-safe, does not block."""
        self._commands.put(("abort", request_id))

    async def flush_cache(self, namespace: str | None = None) -> int:
        """Evict every cached prefix page that no running request holds, of every namespace (None) or of
        `namespace` and those nested under it; -> pages freed (Engine.flush_cache). Applied on the engine
        thread between steps; raises EngineShutDown if the engine stopped first."""
        with self._lock:
            if self._stopped:
                raise EngineShutDown("the engine shut down")
        self._ensure_thread()
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put(("flush", done, namespace))
        if not self.is_running:  # it stopped after the check: nobody else will answer
            self._fail_queued_flushes()
        return await asyncio.wrap_future(done)

    def shutdown(self, timeout: float | None = 30.0) -> None:
        """Stop the engine thread; the engine is then closed (Engine.close: the page store keeps the cached
        prefixes), on the engine thread, or here if it never started."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        self._commands.put(("stop",))
        if thread is not None:
            thread.join(timeout)
        else:
            self._close_engine()

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None and not self._stopped:  # after shutdown, shutdown closes the engine
                self._thread = threading.Thread(target=self._loop, name="trellis-engine", daemon=True)
                self._thread.start()

    # ---- engine thread --------------------------------------------------------------------------------
    def _loop(self) -> None:
        idle_checked, prefetching = True, True
        while True:
            if not self._apply_commands(block=not self.engine.has_unfinished(), prefetching=prefetching):
                break
            if self.engine.has_unfinished():
                self._step()
                idle_checked = False
            elif prefetching:
                prefetching = self._prefetch_turn()
            elif not idle_checked:
                idle_checked = True
                if self.check_integrity_when_idle:
                    self.engine.scheduler.check_integrity()
                self._checkpoint()
        self._fail_all(EngineShutDown("the engine shut down"))
        self._fail_queued_flushes()
        self._close_engine()

    def _checkpoint(self) -> None:
        checkpoint = getattr(self.engine, "checkpoint", None)  # test doubles may have none
        if checkpoint is None:
            return
        try:
            checkpoint()
        except Exception:  # a failing store costs the next start its warm cache, never the server
            logger.exception("checkpointing the cached prefixes into the page store failed")

    def _close_engine(self) -> None:
        close = getattr(self.engine, "close", None)  # test doubles may have none
        if close is None:
            return
        try:
            close()
        except Exception:  # a failing store must not keep the server from stopping; the next start is cold
            logger.exception("closing the engine (writing its cached prefixes to the page store) failed")

    def _prefetch_turn(self) -> bool:
        """Idle: put the pages a restart's prefetch has read onto the device; False once it is done."""
        turn = getattr(self.engine, "prefetch_turn", None)  # test doubles may have none
        if turn is None:
            return False
        try:
            return turn()
        except Exception:  # a failing prefetch costs the first requests their warm cache, never the server
            logger.exception("prefetching the persisted prefixes onto the device failed")
            return False

    def _apply_commands(self, block: bool, prefetching: bool = False) -> bool:
        """Apply queued adds/aborts; False on stop. `prefetching`: wait briefly (the idle loop places pages)."""
        wait = _PREFETCH_WAIT_S if prefetching else _IDLE_WAIT_S
        try:
            command = self._commands.get(timeout=wait) if block else self._commands.get_nowait()
        except queue.Empty:
            return True
        while True:
            if command[0] == "stop":
                return False
            self._apply(command)
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return True

    def _apply(self, command: tuple) -> None:
        if command[0] == "abort":
            self.engine.abort(command[1])
            return
        if command[0] == "flush":
            _, done, namespace = command
            try:
                done.set_result(self.engine.flush_cache(namespace))
            except Exception as error:  # an integrity failure reaches the caller (and the log), not the loop
                logger.exception("flush_cache failed")
                done.set_exception(error)
            return
        _, request_id, token_ids, sampling, namespace, priority = command
        with self._lock:
            stream = self._streams.get(request_id)
        if stream is None:
            return  # aborted before it was added
        try:
            self.engine.add_request(request_id, token_ids, sampling, namespace=namespace, priority=priority)
        except ValueError as error:
            stream.put(error)

    def _step(self) -> None:
        try:
            deltas = self.engine.step()
        except Exception as error:  # the step failed: fail every stream, free every page
            logger.exception("engine step failed")
            self._fail_all(error)
            return
        failures = self.engine.pop_failures()
        with self._lock:
            for request_id, error in failures.items():  # queued before their "abort" deltas (next step's)
                stream = self._streams.get(request_id)
                if stream is not None:
                    stream.put(error)
            for delta in deltas:
                stream = self._streams.get(delta.request_id)
                if stream is not None and not stream.put(delta):
                    self._commands.put(("abort", delta.request_id))

    def _fail_queued_flushes(self) -> None:
        """After stop: answer flushes still queued (their callers would otherwise wait forever)."""
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if command[0] == "flush":
                command[1].set_exception(EngineShutDown("the engine shut down"))

    def _fail_all(self, error: BaseException) -> None:
        self.engine.abort_all()
        with self._lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream.put(error)
