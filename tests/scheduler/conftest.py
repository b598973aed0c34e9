"""Helpers for scheduler tests: a Scheduler over a RadixCache and a FakeRunner, driven step by step."""

import pytest

from trellis_jax.cache import RadixCache
from trellis_jax.scheduler import Scheduler, SchedulerConfig
from trellis_jax.step_plan import SamplingArrays, StepOutputs
from trellis_testing.fakes import FakeRunner


class Harness:
    def __init__(self, *, num_pages=64, page_size=4, enable_prefix_cache=True, **options):
        self.config = SchedulerConfig(page_size=page_size, enable_prefix_cache=enable_prefix_cache, **options)
        self.cache = RadixCache(num_pages, page_size, enabled=enable_prefix_cache)
        self.scheduler = Scheduler(self.config, self.cache)
        self.runner = FakeRunner(
            num_pages,
            page_size,
            max_num_tokens=self.config.max_num_batched_tokens,
            max_num_seqs=self.config.max_num_seqs,
        )
        self.plans = []
        self.finished = {}  # request id -> (output token ids, finish reason)
        self.outputs = {}

    def add(self, request_id, prompt, max_tokens=4, **kw):
        request = self.scheduler.add_request(request_id, list(prompt), SamplingArrays(), max_tokens=max_tokens, **kw)
        self.outputs[request_id] = []
        return request

    def step(self):
        plan = self.scheduler.schedule()
        self.plans.append(plan)
        outputs = self.runner.run(plan) if not plan.is_empty else None
        events = self.scheduler.commit(plan, outputs or StepOutputs({}))
        for event in events:
            if event.token is not None:
                self.outputs[event.request_id].append(event.token.token_id)
            if event.finish_reason is not None:
                self.finished[event.request_id] = (self.outputs[event.request_id], event.finish_reason)
        self.cache.check_integrity()
        return plan, events

    def run(self, max_steps=10_000):
        for _ in range(max_steps):
            if not self.scheduler.has_unfinished():
                return
            self.step()
        raise AssertionError("did not finish")

    def all_pages_back(self):
        self.cache.evict(self.cache.num_pages)
        return self.cache.num_free_pages == self.cache.num_pages - 1


@pytest.fixture
def harness():
    return Harness
