"""Driving an engine in tests: step it until every request has finished.

run_all(engine) -> {request_id: RequestOutput}
run_streaming(engine, requests, abort_after=, each_step=) -> {request_id: RequestOutput}
"""

from __future__ import annotations


def run_all(engine) -> dict:
    """Step `engine` until nothing is left; -> every finished request's output, by request id."""
    outputs = {}
    while engine.has_unfinished():
        engine.step()
        outputs.update({o.request_id: o for o in engine.pop_finished()})
    return outputs


def run_streaming(engine, requests, *, abort_after: dict | None = None, each_step=None) -> dict:
    """Add `requests` [(id, prompt, SamplingParams)] and step `engine` until nothing is left, aborting a
    request once at least abort_after[id] of its tokens were streamed (once); `each_step()` runs after every
    step (an integrity check). -> every finished request's output, by request id."""
    for request_id, prompt, params in requests:
        engine.add_request(request_id, prompt, params)
    outputs, streamed, abort_after = {}, {}, dict(abort_after or {})
    while engine.has_unfinished():
        for delta in engine.step():
            streamed[delta.request_id] = streamed.get(delta.request_id, 0) + len(delta.token_ids)
        for request_id, at in list(abort_after.items()):
            if streamed.get(request_id, 0) >= at:
                engine.abort(request_id)
                del abort_after[request_id]
        outputs.update({o.request_id: o for o in engine.pop_finished()})
        if each_step is not None:
            each_step()
    return outputs
