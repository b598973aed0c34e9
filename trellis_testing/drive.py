"""Driving an engine in tests: step it until every request has finished.

run_all(engine) -> {request_id: RequestOutput}
"""

from __future__ import annotations


def run_all(engine) -> dict:
    """Step `engine` until nothing is left; -> every finished request's output, by request id."""
    outputs = {}
    while engine.has_unfinished():
        engine.step()
        outputs.update({o.request_id: o for o in engine.pop_finished()})
    return outputs
