"""Hypothesis stateful test: random scheduler-like operations on RadixCache vs the brute-force oracle,
with check_integrity() and a full content comparison after every step (see cache_oracle.py)."""

from cache_oracle import Driver
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from trellis_jax.cache import policy_names

NAMESPACES = ["", "tenant-a", "tenant-b", "public"]
# A tiny alphabet and short prompts make shared prefixes, splits and duplicates frequent.
TOKENS = st.lists(st.integers(0, 2), min_size=0, max_size=10)


class RadixCacheMachine(RuleBasedStateMachine):
    @initialize(
        page_size=st.sampled_from([1, 2, 3]),
        num_pages=st.integers(3, 24),
        policy=st.sampled_from(policy_names()),
        shared=st.booleans(),
    )
    def setup(self, page_size, num_pages, policy, shared):
        self.driver = Driver(num_pages, page_size, policy, frozenset({"public"}) if shared else frozenset())

    @rule(ns=st.sampled_from(NAMESPACES), tokens=TOKENS)
    def start_request(self, ns, tokens):
        self.driver.start(ns, tokens)

    @precondition(lambda self: self.driver.requests)
    @rule(index=st.integers(0, 50))
    def commit_request(self, index):
        self.driver.commit(index)

    @precondition(lambda self: self.driver.requests)
    @rule(index=st.integers(0, 50), tokens=st.lists(st.integers(0, 2), min_size=1, max_size=4))
    def extend_request(self, index, tokens):
        self.driver.extend(index, tokens)

    @precondition(lambda self: self.driver.requests)
    @rule(index=st.integers(0, 50))
    def finish_request(self, index):
        self.driver.finish(index)

    @rule(ns=st.sampled_from(NAMESPACES), tokens=TOKENS)
    def probe(self, ns, tokens):
        self.driver.probe(ns, tokens)

    @rule(n=st.integers(0, 6))
    def evict(self, n):
        self.driver.evict(n)

    @invariant()
    def consistent(self):
        if hasattr(self, "driver"):
            self.driver.check()


RadixCacheMachine.TestCase.settings = settings(
    max_examples=120, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_radix_cache_matches_oracle = RadixCacheMachine.TestCase
