"""Failure isolation for one engine step: a request whose share of the step cannot run fails alone.

Contract:
    run_isolated(runner, plan, fail_rows) -> (plan that ran, its StepOutputs)
`runner.run(plan)` (or `launch(plan)`, e.g. runner.dispatch: packing raises there too); if it raises, every row of the plan is checked alone with the runner's host-side
packing (`runner.check_plan(StepPlan([row]))`: what `run` does before it touches the device). The rows
that fail alone are the culprits: `fail_rows({row id: error}) -> ended scheduler ids` ends their
requests (the engine aborts them, with all their sequences, and hands each stream its error), and the
step runs again without the rows of every ended sequence (their prompt-lookup draft rows included).
What ran comes back, for `Scheduler.commit`. When no row fails alone (the error is not one request's:
a device failure, a plan too big as a whole), or the runner has no `check_plan`, the original
exception propagates and the caller fails every request, as before.

Why a retry of the same plan is sound: `schedule()` gave every row its pages and locked its prefix
before the run, and `Runner.run` packs before it copies pages or runs the step, so a packing failure
leaves the KV pages as `schedule()` planned them. Failed requests release their pages before the retry
(without caching a tail page whose positions may never have been written: `Scheduler.fail`), and the
retry drops the page copies into their pages. `commit` then advances only the rows that ran.
"""

from __future__ import annotations

import logging

from trellis_jax.scheduler.scheduler import DRAFT_MARK
from trellis_jax.step_plan import StepOutputs, StepPlan

logger = logging.getLogger(__name__)


def run_isolated(runner, plan: StepPlan, fail_rows, launch=None) -> tuple[StepPlan, object]:
    """(the plan that ran, its outputs); each retry drops at least one row, so the loop ends. `launch`: what
    runs the plan instead of runner.run (the overlapped engine's runner.dispatch: then the second item is
    its launch, or None when every row failed)."""
    launch = launch or runner.run
    while True:
        try:
            return plan, launch(plan)
        except Exception as error:
            culprits = find_culprits(runner, plan)
            if not culprits:
                raise
            logger.warning(
                "step failed (%s: %s); failing only the requests whose rows fail alone: %s",
                type(error).__name__,
                error,
                sorted(culprits),
            )
            plan = without_rows(plan, fail_rows(culprits))
            if plan.is_empty:
                return plan, StepOutputs({}) if launch == runner.run else None


def find_culprits(runner, plan: StepPlan) -> dict[str, Exception]:
    """Row id -> the error its row raises when packed alone (host only); empty if none fails alone."""
    check = getattr(runner, "check_plan", None)
    if check is None:
        return {}
    culprits = {}
    for row in plan.sequences:
        try:
            check(StepPlan([row], decode_steps=plan.decode_steps))
        except Exception as error:  # whatever packing raises, it is this row's
            culprits[row.request_id] = error
    return culprits


def without_rows(plan: StepPlan, ended: set[str]) -> StepPlan:
    """`plan` less the rows of the `ended` scheduler ids (their draft rows too) and the page copies into
    their pages (new positions and copies only ever go to a sequence's own private pages)."""

    def is_ended(row) -> bool:
        return row.request_id.split(DRAFT_MARK)[0] in ended

    their_pages = {page for row in plan.sequences if is_ended(row) for page in row.page_ids}
    return StepPlan(
        [row for row in plan.sequences if not is_ended(row)],
        [(src, dst) for src, dst in plan.page_copies if dst not in their_pages],
        plan.decode_steps,
    )
