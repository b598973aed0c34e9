"""The matmul op's backend and `auto`'s dtype chosen by measurement (pallas_kernels/matmul/calibrate.py), with
timings injected (a function of what is timed, not a clock): the fastest backend per shape class is what
`choose` returns, the choice is stored and read back, another machine or a damaged file measures afresh, a
pin overrides it, and calibration off keeps the op's rules."""

from __future__ import annotations

import json
import logging

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels.matmul import api, calibrate, calibration_store, choices, native_f32

pytestmark = pytest.mark.skipif(native_f32.available() is not None, reason="needs the native float32 kernel")
K, N = 32, 48
GROUP = "layers/float32"
TIMINGS = 2 * len(choices.ROW_CLASSES)  # a float32 group's timings: each row class on native and xla


@pytest.fixture(autouse=True)
def calibration_on(monkeypatch, tmp_path):
    monkeypatch.setenv("TRELLIS_CALIBRATION", "on")
    monkeypatch.setenv("TRELLIS_CALIBRATION_DIR", str(tmp_path))
    monkeypatch.delenv(calibrate.PIN_ENV, raising=False)
    choices.clear()
    yield
    choices.clear()


def params(layers=2, k=K, n=N, dtype=jnp.float32):
    w = jax.random.normal(jax.random.key(0), (layers, k, n)).astype(dtype)
    return {"embed": jnp.zeros((8, k), dtype), "layers": {"w_qkv": w, "attn_norm": jnp.ones((layers, k), dtype)}}


class FakeClock:
    """Seconds by (group, row class, backend); counts the timings asked for."""

    def __init__(self, seconds):
        self.seconds, self.calls = seconds, 0

    def __call__(self, label, call):
        self.calls += 1
        return self.seconds[label]


def clock(decode, batch, prefill, wide=None):
    """Each class's winner named (wide: batch's unless given, small: decode's): the other backend takes
    twice as long."""
    winners = {"small": decode, "decode": decode, "batch": batch, "wide": wide or batch, "prefill": prefill}
    return FakeClock(
        {(GROUP, c, b): 1.0 if b == winner else 2.0 for c, winner in winners.items() for b in ("native", "xla")}
    )


def chosen_for(rows, w=None):
    w = params()["layers"]["w_qkv"] if w is None else w
    return api.choose(jax.ShapeDtypeStruct((rows, K), jnp.float32), w)


def test_choose_returns_the_fastest_measured_backend_per_row_class():
    calibrate.apply(params(), jnp.float32, measure=clock(decode="xla", batch="native", wide="xla", prefill="native"))
    rows = (2, 16, 17, 32, 33, 64, 65, 1024)
    assert [chosen_for(m) for m in rows] == ["xla", "xla", "native", "native", "xla", "xla", "native", "native"]


def test_calibration_off_installs_nothing_and_keeps_the_rules(monkeypatch):
    monkeypatch.setenv("TRELLIS_CALIBRATION", "off")
    fake = clock(decode="xla", batch="xla", prefill="xla")
    assert calibrate.apply(params(), jnp.float32, measure=fake) == {}
    assert fake.calls == 0
    assert chosen_for(2) == "native"  # the AVX2 and AVX-512 builds' rule for a small float32 step


def test_a_second_start_reads_the_stored_choice_without_timing():
    calibrate.apply(params(), jnp.float32, measure=clock(decode="xla", batch="native", prefill="xla"))
    choices.clear()
    again = clock(decode="native", batch="native", prefill="native")
    calibrate.apply(params(), jnp.float32, measure=again)
    assert again.calls == 0
    assert calibrate.last_report()["cached"] is True
    assert chosen_for(2) == "xla"


def test_other_cpu_flags_measure_again(monkeypatch):
    calibrate.apply(params(), jnp.float32, measure=clock(decode="xla", batch="xla", prefill="xla"))
    monkeypatch.setattr(calibration_store, "_cpu", lambda: ("Another CPU", "fpu sse2 avx512f amx_bf16"))
    again = clock(decode="native", batch="native", prefill="native")
    calibrate.apply(params(), jnp.float32, measure=again)
    assert again.calls == TIMINGS
    assert chosen_for(2) == "native"


def test_other_shapes_measure_again():
    calibrate.apply(params(), jnp.float32, measure=clock(decode="xla", batch="xla", prefill="xla"))
    again = clock(decode="native", batch="native", prefill="native")
    calibrate.apply(params(n=2 * N), jnp.float32, measure=again)
    assert again.calls == TIMINGS


def test_a_damaged_cache_file_is_logged_deleted_and_measured_again(tmp_path, caplog):
    calibrate.apply(params(), jnp.float32, measure=clock(decode="xla", batch="xla", prefill="xla"))
    (stored,) = tmp_path.glob("*.json")
    stored.write_text(stored.read_text()[:40])
    choices.clear()
    again = clock(decode="native", batch="native", prefill="native")
    with caplog.at_level(logging.WARNING, logger=calibration_store.__name__):
        calibrate.apply(params(), jnp.float32, measure=again)
    assert again.calls == TIMINGS
    assert "damaged" in caplog.text
    assert json.loads(stored.read_text())["choices"]  # rewritten whole


def test_a_record_with_an_unknown_backend_is_damaged(tmp_path):
    calibrate.apply(params(), jnp.float32, measure=clock(decode="xla", batch="xla", prefill="xla"))
    (stored,) = tmp_path.glob("*.json")
    record = json.loads(stored.read_text())
    record["choices"][0][-1] = "gpu"
    stored.write_text(json.dumps(record))
    again = clock(decode="native", batch="native", prefill="native")
    calibrate.apply(params(), jnp.float32, measure=again)
    assert again.calls == TIMINGS


@pytest.mark.parametrize("backend", ["native", "xla"])
def test_a_pin_overrides_measurement_in_every_row_class(monkeypatch, backend):
    monkeypatch.setenv(calibrate.PIN_ENV, backend)
    fake = clock(decode="xla", batch="native", prefill="xla")
    calibrate.apply(params(), jnp.float32, measure=fake)
    assert fake.calls == 0
    assert {chosen_for(m) for m in (2, 64, 1024)} == {backend}


def test_a_pin_given_by_the_caller_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(calibrate.PIN_ENV, "native")
    calibrate.apply(params(), jnp.float32, pin="xla")
    assert {chosen_for(m) for m in (2, 64, 1024)} == {"xla"}


def test_a_native_pin_where_no_native_kernel_runs_is_refused(monkeypatch):
    monkeypatch.setenv(calibrate.PIN_ENV, "native")
    with pytest.raises(ValueError, match="no native kernel"):
        calibrate.apply(params(dtype=jnp.bfloat16), jnp.bfloat16)  # plain bfloat16: XLA only


def test_an_unknown_pin_is_refused(monkeypatch):
    monkeypatch.setenv(calibrate.PIN_ENV, "fastest")
    with pytest.raises(ValueError, match="TRELLIS_MATMUL_BACKEND"):
        calibrate.apply(params(), jnp.float32)


def test_an_xla_pin_beside_batch_invariance_is_refused(monkeypatch):
    monkeypatch.setenv(calibrate.PIN_ENV, "xla")
    with pytest.raises(ValueError, match="batch_invariant"):
        calibrate.apply(params(), jnp.float32, batch_invariant=True)


@pytest.fixture
def small_dtype_layer(monkeypatch):
    monkeypatch.setattr(calibrate, "DTYPE_SHAPES", ((K, N), (N, K)))


def dtype_clock(bf16_seconds):
    """float32 takes 1 s in every class and backend; bfloat16 (plain or pairs) `bf16_seconds`."""

    def seconds(label, call):
        return bf16_seconds if "bfloat16" in label[0] else 1.0

    return seconds


@pytest.mark.parametrize(("bf16_seconds", "expected"), [(0.5, True), (2.0, False)])
@pytest.mark.usefixtures("small_dtype_layer")
def test_auto_dtype_follows_the_measured_matmul_time(bf16_seconds, expected):
    assert calibrate.prefers_bfloat16(measure=dtype_clock(bf16_seconds)) is expected


@pytest.mark.usefixtures("small_dtype_layer")
def test_auto_dtype_measurement_is_stored():
    calibrate.prefers_bfloat16(measure=dtype_clock(0.5))
    assert calibrate.prefers_bfloat16(measure=dtype_clock(2.0)) is True  # read back, not timed again


def test_auto_dtype_with_calibration_off_is_left_to_the_rule(monkeypatch):
    monkeypatch.setenv("TRELLIS_CALIBRATION", "off")
    assert calibrate.prefers_bfloat16(measure=dtype_clock(0.5)) is None


def test_installed_choices_change_the_serialized_executables_key():
    from trellis_jax.runner.executable_cache import fingerprint

    before = fingerprint("same program")
    choices.install({choices.Entry("float32", K, N, "decode"): "xla"})
    assert fingerprint("same program") != before
