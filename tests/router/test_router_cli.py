"""`python -m trellis_jax.router`: flags, refusals, and what it loads (no jax, no engine, no server)."""

import subprocess
import sys

import pytest

from trellis_jax.router.__main__ import build_parser, main, settings_from


def test_importing_the_router_loads_neither_jax_nor_the_engine_nor_the_server():
    code = (
        "import sys, trellis_jax.router.__main__, trellis_jax.router.app\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'numpy')"
        " or m.startswith(('trellis_jax.engine', 'trellis_jax.serve', 'trellis_jax.model', 'trellis_jax.runner'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_without_a_worker_the_command_stops_saying_so(capsys):
    with pytest.raises(SystemExit):
        main([])
    assert "--worker" in capsys.readouterr().err


def test_a_bad_worker_url_stops_the_command_naming_it(capsys):
    with pytest.raises(SystemExit):
        main(["--worker", "localhost:8000"])
    assert "localhost:8000" in capsys.readouterr().err


def test_an_unknown_policy_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--worker", "http://127.0.0.1:1", "--policy", "random"])
    assert "cache_aware" in capsys.readouterr().err


def test_the_admin_key_may_come_from_the_environment():
    args = build_parser().parse_args(["--worker", "http://127.0.0.1:1"])
    assert settings_from(args, {"TRELLIS_ROUTER_ADMIN_KEY": "k"}).admin_keys == ("k",)


def test_the_command_serves_on_the_port_it_prints_and_exits_0_on_sigterm():
    import re
    import signal

    import httpx
    from router_harness import FakeWorker

    with FakeWorker("w0") as worker:
        command = [sys.executable, "-m", "trellis_jax.router", "--worker", worker.url, "--port", "0"]
        router = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            line = router.stdout.readline()
            url = re.search(r"http://127\.0\.0\.1:\d+", line).group()
            assert "keyed by characters" in line
            answer = httpx.post(url + "/v1/completions", json={"prompt": "hi"}, timeout=10)
            assert answer.json()["worker"] == "w0"
        finally:
            router.send_signal(signal.SIGTERM)
            assert router.wait(20) == 0
