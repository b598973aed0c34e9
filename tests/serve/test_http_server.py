"""The shared uvicorn launch (trellis_jax/http_server.py): a signal inside stop_on_signal stops the server
gracefully, whenever it comes, and the handlers found before are put back after."""

import os
import signal
from types import SimpleNamespace

import pytest

from trellis_jax.http_server import stop_on_signal


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_before_uvicorn_runs_asks_the_server_to_exit(sig):
    server = SimpleNamespace(should_exit=False)
    with stop_on_signal(server):
        os.kill(os.getpid(), sig)
    assert server.should_exit


def test_the_previous_handlers_come_back_after_the_block():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with stop_on_signal(SimpleNamespace(should_exit=False)):
        assert signal.getsignal(signal.SIGTERM) is not before[0]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
