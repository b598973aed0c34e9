"""Packaging: `pip install .` (no make) gives every console script, the presets as package data, and a
server that answers a chat; `import trellis_jax` stays light while `from trellis_jax import LLM` works.

The install goes into a fresh venv that sees this interpreter's packages (a .pth file), so no dependency
is downloaded: `pip install --no-deps --no-build-isolation` of a copy of the source tree (the build writes
build/ and egg-info beside the sources, so the checkout is not touched). Where this interpreter's setuptools
is older than the build needs (a venv's bundled 65.x; pyproject asks for >= 77), pip fetches only the build
backend, from its configured index, into an isolated build env.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import venv

import httpx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "fixtures" / "tiny_llama"
SCRIPTS = ("trellis-serve", "trellis-batch", "trellis-generate", "trellis-ablate", "trellis-router")


def test_importing_the_package_loads_no_layer_and_the_offline_api_loads_on_first_use():
    code = (
        "import sys, trellis_jax\n"
        "light = not any(m.startswith(('jax', 'trellis_jax.engine')) for m in sys.modules)\n"
        "from trellis_jax import LLM, SamplingParams\n"
        "from trellis_jax.engine.api import LLM as EngineLLM\n"
        "print(light, LLM is EngineLLM, SamplingParams(max_tokens=3).max_tokens)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["True", "True", "3"], out.stderr


def test_an_unknown_name_is_an_attribute_error():
    import trellis_jax

    with pytest.raises(AttributeError, match="no attribute 'LLMM'"):
        trellis_jax.LLMM  # noqa: B018


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> pathlib.Path:
    """A venv with this checkout pip-installed (not editable); returns its bin directory."""
    base = tmp_path_factory.mktemp("install")
    source = base / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("trellis_jax", "pallas_kernels"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    env_dir = base / "venv"
    venv.create(env_dir, system_site_packages=False, with_pip=False)
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = pathlib.Path(
        subprocess.run(
            [env_dir / "bin" / "python", "-c", where], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "host_packages.pth").write_text("\n".join(sorted(ours)) + "\n")  # plain paths: no editable finder runs
    isolation = ["--no-build-isolation"] if _host_can_build() else []
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(env_dir / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            *isolation,
            str(source),
        ],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=base,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return env_dir / "bin"


def _host_can_build() -> bool:
    import setuptools

    return int(setuptools.__version__.split(".")[0]) >= 77


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH: the installed copy, not this checkout, must answer."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _start(bin_dir: pathlib.Path, *argv: str) -> subprocess.Popen:
    """`argv` started from the installed bin directory, without waiting for it; stdout and stderr piped."""
    return subprocess.Popen(
        [str(bin_dir / argv[0]), *argv[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_clean_env(),
        cwd=bin_dir,
    )


def _run(bin_dir: pathlib.Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(bin_dir / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=bin_dir,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_pip_install_gives_every_console_script_with_help_and_version(installed):
    # The scripts start side by side: each is mostly an interpreter start and imports, waiting for a core.
    started = {script: _start(installed, script, "--version") for script in SCRIPTS}
    started["help"] = _start(installed, "trellis-serve", "--help")
    try:
        output = {name: process.communicate(timeout=120) for name, process in started.items()}
    finally:
        for process in started.values():
            process.kill()
    for script in SCRIPTS:
        assert output[script][0].strip() == f"{script} (trellis-jax) 0.1.0", output[script]
    assert "--max-waiting-requests" in output["help"][0], output["help"][1]


@pytest.mark.slow
def test_the_installed_package_is_not_this_checkout_and_ships_the_presets(installed):
    code = (
        "import trellis_jax, os; from trellis_jax.checkpoints.presets import preset_names;"
        "print(os.path.dirname(trellis_jax.__file__)); print(','.join(preset_names()))"
    )
    out = _run(installed, "python", "-c", code).stdout.split()
    assert not out[0].startswith(str(ROOT)) and "smollm2-135m" in out[1].split(",")


@pytest.mark.slow
def test_the_installed_server_answers_a_chat(installed, tmp_path):
    argv = [
        str(installed / "trellis-serve"),
        "--model",
        str(TINY),
        "--port",
        "0",
        "--deterministic",
        "--max-num-seqs",
        "2",
        "--max-num-batched-tokens",
        "16",
        "--max-model-len",
        "64",
        "--num-pages",
        "16",
        "--compile-cache-dir",
        str(tmp_path / "xla"),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_clean_env(), cwd=tmp_path
    )
    try:
        url = _wait_for_url(proc)
        r = httpx.post(
            url + "/v1/chat/completions",
            timeout=60,
            json={
                "model": "tiny_llama",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 3,
                "temperature": 0,
            },
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 1 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")


def _wait_for_url(proc: subprocess.Popen) -> str:
    lines = []
    for line in proc.stdout:
        lines.append(line)
        match = re.search(r"(http://\S+)/v1 ", line)
        if match:
            return match.group(1)
    raise AssertionError("the installed server did not start:\n" + "".join(lines[-30:]) + json.dumps(proc.args))
