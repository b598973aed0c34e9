"""tools/bench_engine_gap.py's --variant: NAME=JSON engine options, refusing what it cannot time fairly."""

import argparse

import pytest

from tools.bench_engine_gap import main, parse_variant


def test_a_variant_is_a_name_and_engine_options_with_lists_as_tuples():
    assert parse_variant('min8={"token_buckets": [8, 16], "decode_steps": 4}') == (
        "min8",
        {"token_buckets": (8, 16), "decode_steps": 4},
    )


@pytest.mark.parametrize(
    "text",
    [
        "nojson",  # no NAME=
        "x={bad json",
        "x=[1, 2]",  # not an object
        'bare={"decode_steps": 2}',  # a name every run already has
        'x={"overlap": true}',  # its device step would run on in the next system's turn
        'x={"weight_format": "float"}',  # the systems share one loaded model
    ],
)
def test_a_variant_it_cannot_time_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_variant(text)


def test_an_unknown_engine_option_stops_the_run_before_any_load(capsys):
    with pytest.raises(SystemExit):
        main(["--variant", 'x={"no_such_option": 1}'])
    assert "no_such_option" in capsys.readouterr().err
