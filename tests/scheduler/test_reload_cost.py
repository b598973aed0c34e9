"""The reload-or-recompute cost model (scheduler/reload.py): reload when loading the pages is faster than
computing their tokens, from measured rates."""

from trellis_jax.scheduler.reload import ReloadCost

MB = 1_000_000


def cost(**rates) -> ReloadCost:
    return ReloadCost(bytes_per_page=MB, **rates)


def test_reload_wins_when_loading_is_faster():
    # 2 pages: 2 MB at 1 GB/s + 2 MB read at 10 GB/s = 2.2 ms, against 32 tokens at 1000 tok/s = 32 ms
    c = cost(prefill_tokens_per_s=1000.0, h2d_bytes_per_s=1e9)
    assert abs(c.reload_seconds(("host", "host")) - 0.0022) < 1e-9
    assert c.should_reload(("host", "host"), 32)


def test_recompute_wins_when_loading_is_slower():
    c = cost(prefill_tokens_per_s=100_000.0, h2d_bytes_per_s=1e8)
    assert not c.should_reload(("host", "host"), 32)  # 20 ms of transfer against 0.3 ms of prefill


def test_the_fixed_cost_of_a_load_call_counts():
    c = cost(prefill_tokens_per_s=1000.0, h2d_bytes_per_s=1e12, load_call_seconds=0.05)
    assert not c.should_reload(("host",), 16)  # 50 ms of call against 16 ms of prefill


def test_disk_pages_cost_their_read_rate():
    c = cost(prefill_tokens_per_s=1000.0, h2d_bytes_per_s=1e12)
    assert c.reload_seconds(("disk",)) > c.reload_seconds(("host",))


def test_measurements_move_the_rates():
    c = cost(prefill_tokens_per_s=1000.0)
    c.observe_prefill(2000, 1.0)
    assert 1000.0 < c.prefill_tokens_per_s < 2000.0
    c.observe_read("disk", 4 * MB, 1.0)
    assert c.read_bytes_per_s["disk"] < 5e8
    c.observe_prefill(0, 1.0)  # an empty measurement changes nothing
    assert 1000.0 < c.prefill_tokens_per_s < 2000.0
