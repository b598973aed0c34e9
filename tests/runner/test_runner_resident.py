"""The resident step state in the Runner (tiny random model): the same plans give the same tokens, logprobs and
top-N with resident_state on and off, through joins, page growth, pending (device-fed) tokens, penalties, a
logit_bias, a grammar mask, a request leaving, one joining and one recomputed elsewhere (a preemption)."""

from __future__ import annotations

import pytest

from trellis_jax.runner import Runner
from trellis_jax.step_plan import PENDING_TOKEN, SamplingArrays, SequenceWork, StepPlan

PAGE_SIZE = 4
KNOBS = {
    "greedy": SamplingArrays(num_logprobs=2),
    "hot": SamplingArrays(temperature=0.8, top_k=7, top_p=0.9, min_p=0.02, seed=5, num_logprobs=3),
    "penalised": SamplingArrays(temperature=0.5, presence_penalty=0.4, frequency_penalty=0.3, repetition_penalty=1.3),
    "biased": SamplingArrays(temperature=0.6, seed=8, logit_bias=((3, 4.0), (9, -100.0))),
    "grammar": SamplingArrays(temperature=1.0, seed=2, structured=True),
}


@pytest.fixture(scope="module")
def runners(tiny_random_model):
    made = {}
    for resident in (True, False):
        made[resident] = Runner(
            tiny_random_model,
            page_size=PAGE_SIZE,
            num_pages=128,
            token_buckets=(4, 16),
            seq_buckets=(1, 4),
            max_logprobs=5,
            resident_state=resident,
        )
        made[resident].warmup(progress=False)
    return made


class Request:
    """A sequence as the scheduler sees it: its tokens so far, its pages, and its last token on the host or not."""

    def __init__(self, rid: str, prompt: list[int], first_page: int, knobs: str) -> None:
        self.rid, self.prompt, self.first_page, self.knobs = rid, prompt, first_page, knobs
        self.generated: list[int] = []
        self.computed = 0  # tokens whose KV is in the pages

    def pages(self, upto: int) -> list[int]:
        return list(range(self.first_page, self.first_page + -(-upto // PAGE_SIZE)))

    def work(self, pending: bool) -> SequenceWork:
        tokens = self.prompt + self.generated
        new = [PENDING_TOKEN] if pending and self.computed == len(tokens) - 1 else tokens[self.computed :]
        sampling = KNOBS[self.knobs]
        penalised = self.knobs == "penalised"
        return SequenceWork(
            self.rid,
            new,
            self.computed,
            self.pages(len(tokens)),
            True,
            sampling,
            rng_step=len(self.generated),
            penalty_context=list(self.generated) if penalised else [],
            prompt_token_ids=list(self.prompt) if penalised else [],
            bitmask=[0b1011011010, -1, 0, 0] if sampling.structured else None,
        )


def run_workload(runner: Runner) -> list[dict]:
    """Prefill, then decode steps dispatched with device-fed tokens (host tokens for the penalised row, which
    needs them); returns every step's outputs."""
    live = {r.rid: r for r in [Request("g", [5, 6, 7], 1, "greedy"), Request("h", [8, 9], 20, "hot")]}
    live["p"] = Request("p", [11, 12, 13, 14, 15], 40, "penalised")
    live["b"] = Request("b", [2], 60, "biased")
    seen = []
    for step in range(14):
        if step == 5:
            del live["h"]  # leaves
            live["m"] = Request("m", [1, 2, 3, 4, 5, 6], 80, "grammar")  # joins with a prefill
        if step == 9:  # recomputed elsewhere: a prefill over new pages, then decodes from there
            g = live["g"]
            live["g"] = Request("g", g.prompt + g.generated, 100, "greedy")
        plan = StepPlan([r.work(pending=r.knobs != "penalised" and step % 3 != 0) for r in live.values()])
        outputs = runner.collect(runner.dispatch(plan))
        for request in live.values():
            request.computed = len(request.prompt) + len(request.generated)
            request.generated.append(outputs.tokens[request.rid].token_id)
        seen.append(outputs.tokens)
    return seen


def test_resident_and_full_wire_steps_sample_the_same(runners):
    resident, full = run_workload(runners[True]), run_workload(runners[False])
    assert resident == full
    stats = runners[True].resident_stats
    assert stats["continued"] > 20 and stats["grown"] > 3 and stats["stored"] >= 4  # prefills store their rows
    assert runners[False].resident_stats["steps"] == 0
