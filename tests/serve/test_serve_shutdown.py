"""SIGTERM: the server stops accepting, lets the in-flight stream finish, stops the engine, exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import httpx

HERE = os.path.dirname(os.path.abspath(__file__))


def start_server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "fake_server_main.py"), "0.02"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("URL "), line
    url = line.split()[1]
    for _ in range(200):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            threading.Event().wait(0.05)
    proc.kill()
    raise AssertionError("server did not come up")


def test_sigterm_finishes_in_flight_stream_and_exits_zero():
    proc, url = start_server()
    body = {
        "model": "fake-model",
        "prompt": "abc",
        "max_tokens": 60,
        "temperature": 0,
        "stream": True,
        "ignore_eos": True,
    }
    try:
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as r:
            lines = r.iter_lines()
            first = next(lines)
            assert first.startswith("data: ")
            proc.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line]  # the stream runs to its end despite the signal
        assert rest[-1] == "data: [DONE]"
        assert any('"finish_reason": "length"' in line for line in rest)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "STOPPED idle=True thread_alive=False" in out
    finally:
        if proc.poll() is None:
            proc.kill()
