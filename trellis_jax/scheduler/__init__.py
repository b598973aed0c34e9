"""The host-side scheduler: continuous batching, chunked prefill, cache-aware admission, preemption.

Owns: which requests run in the next step, their page tables, and their locks on the radix cache.
May import: trellis_jax.cache and the standard library only (never jax: tested in milliseconds, reused
by the ablation tools). Lifecycle: `Scheduler.schedule() -> StepPlan`, `Runner.run(plan) -> StepOutputs`,
`Scheduler.commit(plan, outputs) -> [RequestEvent]` (see scheduler.py;
the plan types live in trellis_jax/step_plan.py, shared with the runner).
"""

from trellis_jax.scheduler.config import SCHEDULE_POLICIES, SchedulerConfig
from trellis_jax.scheduler.request import Request, RequestEvent, RequestStatus
from trellis_jax.scheduler.scheduler import RequestRejected, Scheduler
from trellis_jax.scheduler.stats import SchedulerStats

__all__ = [
    "RequestEvent",
    "RequestRejected",
    "Request",
    "RequestStatus",
    "SCHEDULE_POLICIES",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerStats",
]
