"""The peers' thread count in `python -m tools.bench run`: this machine's cores unless --threads says, and the
help says so (with the advice for cores other jobs share)."""

import os

import pytest

from tools.bench.__main__ import parse_args


def test_default_threads_are_this_machine_s_cores():
    assert parse_args(["run"]).threads == os.cpu_count()


def test_threads_flag_sets_them():
    assert parse_args(["run", "--threads", "1"]).threads == 1


def test_help_states_the_default_and_when_to_pass_one(capsys):
    with pytest.raises(SystemExit):
        parse_args(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"default os.cpu_count(), {os.cpu_count()} here" in help_text
    assert "Pass 1 where other jobs share the cores" in help_text
