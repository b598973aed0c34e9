"""Counting XLA compilations, process-wide, through `jax.monitoring`.

Contract: `backend_compile_count()` is the number of programs XLA has compiled (or loaded from the
persistent compilation cache) in this process since this module was imported, counted from JAX's
"/jax/core/compile/backend_compile_duration" event; `compiled_functions()` the names, in order. The
runner adds its own count of bucket compilations on top; a test compares both before and after a
workload to prove nothing recompiled. Importing this module installs one listener, once.
"""

from __future__ import annotations

import threading

from jax import monitoring

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"

_lock = threading.Lock()
_compiled: list[str] = []


def _on_duration_event(event: str, duration_secs: float, **kwargs) -> None:
    if event == BACKEND_COMPILE_EVENT:
        with _lock:
            _compiled.append(str(kwargs.get("fun_name", "?")))


monitoring.register_event_duration_secs_listener(_on_duration_event)


def backend_compile_count() -> int:
    return len(_compiled)


def compiled_functions(since: int = 0) -> list[str]:
    """Names of the programs compiled after the first `since` ones."""
    with _lock:
        return list(_compiled[since:])
