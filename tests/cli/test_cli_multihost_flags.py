"""--coordinator / --num-processes / --process-id / --plan-port (engine/multihost_flags.py): inconsistent
values are usage errors before any model loads, on both engine CLIs."""

from __future__ import annotations

import pytest

from trellis_jax.batch import parse_args as batch_args
from trellis_jax.engine.multihost_flags import SECRET_VARIABLE, Job
from trellis_jax.serve.__main__ import parse_args as serve_args

SECRET = "0123456789abcdef0123"
JOB = ["--num-processes", "2", "--coordinator", "10.0.0.1:7000", "--tensor-parallel-size", "2"]
BATCH = ["--input", "in.jsonl", "--output", "out.jsonl"]


@pytest.fixture
def secret(monkeypatch):
    monkeypatch.setenv(SECRET_VARIABLE, SECRET)


def usage_error(parse, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_consistent_flags_make_a_job_with_the_derived_plan_port(secret):
    job = Job.from_args(serve_args([*JOB, "--process-id", "1"]), {SECRET_VARIABLE: SECRET})
    assert (job.host, job.plan_port, job.is_leader) == ("10.0.0.1", 7001, False)


def test_one_process_is_no_job():
    assert Job.from_args(serve_args([]), {}) is None


@pytest.mark.parametrize("process_id", ["2", "-1"])
def test_process_id_out_of_range_is_refused(secret, capsys, process_id):
    assert "--process-id must be one of 0..1" in usage_error(serve_args, [*JOB, "--process-id", process_id], capsys)


def test_missing_process_id_is_refused(secret, capsys):
    assert "--process-id must be one of 0..1" in usage_error(batch_args, [*BATCH, *JOB], capsys)


def test_coordinator_without_a_port_is_refused(secret, capsys):
    argv = ["--num-processes", "2", "--coordinator", "hostA", "--process-id", "0", "--tensor-parallel-size", "2"]
    assert "needs --coordinator HOST:PORT" in usage_error(serve_args, argv, capsys)


def test_tensor_parallel_size_below_the_process_count_is_refused(secret, capsys):
    argv = ["--num-processes", "2", "--coordinator", "h:7000", "--process-id", "0"]
    assert "less than --num-processes 2" in usage_error(batch_args, [*BATCH, *argv], capsys)


def test_plan_port_equal_to_the_coordinator_port_is_refused(secret, capsys):
    argv = [*JOB, "--process-id", "0", "--plan-port", "7000"]
    assert "--plan-port must be a free port" in usage_error(serve_args, argv, capsys)


def test_job_without_a_secret_is_refused(monkeypatch, capsys):
    monkeypatch.delenv(SECRET_VARIABLE, raising=False)
    assert SECRET_VARIABLE in usage_error(serve_args, [*JOB, "--process-id", "0"], capsys)


def test_short_secret_is_refused(monkeypatch, capsys):
    monkeypatch.setenv(SECRET_VARIABLE, "short")
    assert SECRET_VARIABLE in usage_error(serve_args, [*JOB, "--process-id", "0"], capsys)


def test_job_flags_without_num_processes_are_refused_not_ignored(capsys):
    assert "only apply with --num-processes > 1" in usage_error(serve_args, ["--process-id", "0"], capsys)


@pytest.mark.parametrize("tier_flag", [["--kv-host-bytes", "1GiB"], ["--kv-cache-dir", "/tmp/kv"]])
def test_kv_tiers_are_refused_in_a_multi_process_job(secret, capsys, tier_flag):
    error = usage_error(serve_args, [*JOB, "--process-id", "0", *tier_flag], capsys)
    assert "do not work with --num-processes 2" in error
