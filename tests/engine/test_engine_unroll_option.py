"""The layer-unroll option's spellings (trellis_jax/layer_unroll.py) in EngineConfig and on the command line:
0/1/scan are the scan, N >= 2 a partial unroll, -1/full/True a full one, the bare flag the old switch; any
other value is a ValueError or a usage error naming the spellings."""

from __future__ import annotations

import pytest

from trellis_jax import layer_unroll
from trellis_jax.engine import flags
from trellis_jax.engine.config import EngineConfig
from trellis_jax.serve.__main__ import build_parser


@pytest.mark.parametrize(
    "value, canonical",
    [(0, 1), (1, 1), ("scan", 1), (False, 1), (2, 2), ("8", 8), (-1, -1), ("full", -1), (" Full ", -1), (True, -1)],
)
def test_every_spelling_maps_to_one_canonical_value(value, canonical):
    assert EngineConfig(unroll_layers=value).unroll_layers == canonical


@pytest.mark.parametrize("value", [-2, 2.0, "half", "", None, "1.5"])
def test_engine_config_refuses_a_bad_unroll_value(value):
    with pytest.raises(ValueError, match="unroll_layers"):
        EngineConfig(unroll_layers=value)


@pytest.mark.parametrize(
    "argv, canonical",
    [([], 1), (["--unroll-layers"], -1), (["--unroll-layers", "4"], 4), (["--unroll-layers", "full"], -1)]
    + [(["--unroll-layers", "-1"], -1), (["--unroll-layers", "0"], 1), (["--unroll-layers", "--page-size", "8"], -1)],
)
def test_the_flag_takes_a_count_and_keeps_the_bare_switch(argv, canonical):
    assert flags.engine_config(build_parser().parse_args(argv)).unroll_layers == canonical


def test_the_flag_refuses_a_bad_value_with_the_spellings(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--unroll-layers", "half"])
    assert "N >= 2" in capsys.readouterr().err


@pytest.mark.parametrize("value, layers, expected", [(1, 16, 1), (4, 16, 4), (32, 16, 16), (-1, 16, 16), (3, 1, 1)])
def test_scan_unroll_is_clamped_to_the_depth(value, layers, expected):
    assert layer_unroll.scan_unroll(value, layers) == expected


@pytest.mark.parametrize("value, layers, expected", [(1, 16, False), (4, 16, False), (16, 16, True), (-1, 16, True)])
def test_only_a_loop_free_unroll_counts_as_full(value, layers, expected):
    assert layer_unroll.fully_unrolled(value, layers) is expected
