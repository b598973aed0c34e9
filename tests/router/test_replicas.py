"""`trellis-serve --data-parallel-size N`: each replica's command line, and the router's."""

import re
import signal
import socket
import subprocess
import sys

import pytest

from trellis_jax.serve.__main__ import parse_args
from trellis_jax.serve.replicas import replica_argv, router_argv


def test_a_replica_runs_the_same_flags_without_the_launchers_own_on_its_port():
    argv = ["--model", "tiny-llama", "--data-parallel-size", "3", "--port=9000", "--host", "0.0.0.0", "--api-key", "k"]
    assert replica_argv(argv, 4242) == [
        sys.executable,
        "-m",
        "trellis_jax.serve",
        "--model",
        "tiny-llama",
        "--api-key",
        "k",
        "--host",
        "127.0.0.1",
        "--port",
        "4242",
    ]


def test_the_router_listens_where_the_server_was_asked_to_and_knows_every_replica():
    assert router_argv([1, 2], "0.0.0.0", 9000, "info") == [
        "--worker",
        "http://127.0.0.1:1",
        "--worker",
        "http://127.0.0.1:2",
        "--host",
        "0.0.0.0",
        "--port",
        "9000",
        "--log-level",
        "info",
    ]


def test_the_router_keys_by_token_ids_when_the_model_is_a_tokenizer_it_can_read(fixtures_dir):
    hf_dir = str(fixtures_dir / "tiny_llama")
    assert router_argv([1], "h", 2, "info", hf_dir)[2:4] == ["--tokenizer", hf_dir]
    assert "--tokenizer" not in router_argv([1], "h", 2, "info", "tiny-llama")  # a preset name: characters


def test_the_data_parallel_size_defaults_to_one_server():
    assert parse_args([]).data_parallel_size == 1


@pytest.mark.slow
def test_sigterm_stops_the_router_and_every_replica_and_exits_0():
    command = [
        sys.executable,
        "-m",
        "trellis_jax.serve",
        "--model",
        "tiny-llama",
        "--port",
        "0",
        "--graceful-timeout",
        "5",
    ]
    launcher = subprocess.Popen([*command, "--data-parallel-size", "2"], stdout=subprocess.PIPE, text=True)
    try:
        ports = [int(p) for p in re.search(r"ports ([\d, ]+),", launcher.stdout.readline()).group(1).split(", ")]
        assert "trellis-router:" in launcher.stdout.readline()  # the router is up (replicas still loading)
    finally:
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(30) == 0  # replicas get 5 s to go, then SIGKILL
    for port in ports:  # the launcher waited for its replicas: nothing listens there any more
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
