"""Partial-page reuse: a request's next page starts as a copy of a cached sibling page that shares its
first tokens, and only the rest is computed."""

from test_scheduler_pressure import sum_oracle

SYSTEM = list(range(1, 11))  # 10 tokens: 2 whole pages of 4, then 2 tokens into the third


def computed_positions(h, request_id):
    return sum(n for rid, _, n in h.runner.computed if rid == request_id)


def test_a_sibling_page_lends_its_first_tokens(harness):
    h = harness()
    h.add("a", SYSTEM + [50, 51, 52, 53], max_tokens=1)
    h.run()
    b = h.add("b", SYSTEM + [70, 71], max_tokens=3)
    h.run()
    assert b.num_cached_tokens == 10  # 8 in whole pages + 2 copied from a's third page
    assert h.runner.num_page_copies == 1
    assert computed_positions(h, "b") == 2 + 2  # 70 and 71, then two decode tokens
    assert h.finished["b"][0] == sum_oracle(SYSTEM + [70, 71], 3)  # read back through the copied page
    assert h.all_pages_back()


def test_the_sibling_page_is_shared_as_far_as_it_matches(harness):
    h = harness()
    h.add("a", [1, 2, 3, 4, 5, 6, 7, 8], max_tokens=1)
    h.run()
    b = h.add("b", [1, 2, 3, 9, 9], max_tokens=1)
    h.run()
    assert b.num_cached_tokens == 3
    assert h.finished["b"][0] == sum_oracle([1, 2, 3, 9, 9], 1)


def test_the_source_stays_locked_until_the_step_that_copies_it_commits(harness):
    h = harness()
    h.add("a", SYSTEM + [50, 51, 52, 53], max_tokens=1)
    h.run()
    h.add("b", SYSTEM + [70, 71], max_tokens=1)
    plan = h.scheduler.schedule()
    ((src, dst),) = plan.page_copies
    h.cache.evict(h.cache.num_pages)  # whatever is evictable goes...
    assert h.cache.match(SYSTEM + [50, 51], "").num_cached_tokens == 12  # ...but not the source page
    h.scheduler.commit(plan, h.runner.run(plan))
    h.cache.check_integrity()
    h.run()
    assert h.all_pages_back()  # the lock was released at commit


def test_no_copy_across_namespaces(harness):
    h = harness()
    h.add("a", SYSTEM + [50, 51, 52, 53], max_tokens=1, namespace="tenant-a")
    h.run()
    b = h.add("b", SYSTEM + [70, 71], max_tokens=1, namespace="tenant-b")
    h.run()
    assert b.num_cached_tokens == 0 and h.runner.num_page_copies == 0


def test_cache_off_copies_nothing(harness):
    h = harness(enable_prefix_cache=False)
    h.add("a", SYSTEM + [50, 51, 52, 53], max_tokens=1)
    h.run()
    h.add("b", SYSTEM + [70, 71], max_tokens=1)
    h.run()
    assert h.runner.num_page_copies == 0


def test_a_finished_requests_last_partial_page_starts_the_next_turn(harness):
    h = harness()
    h.add("turn1", SYSTEM, max_tokens=1)  # 10 positions computed: 2 whole pages and 2 tokens of a third
    h.run()
    turn2 = h.add("turn2", SYSTEM + [99, 98], max_tokens=2)
    h.run()
    assert turn2.num_cached_tokens == 10 and h.runner.num_page_copies == 1
    assert h.finished["turn2"][0] == sum_oracle(SYSTEM + [99, 98], 2)
    assert h.all_pages_back()


def test_a_cached_tail_page_is_never_a_whole_page_match(harness):
    h = harness()
    h.add("a", [1, 2, 3, 4, 5, 6], max_tokens=1)  # tail page: 5 6 + padding
    h.run()
    assert h.cache.match([1, 2, 3, 4, 5, 6, 7, 8], "").num_cached_tokens == 4
    assert h.cache.num_evictable_pages == 2  # the whole page and the tail page
