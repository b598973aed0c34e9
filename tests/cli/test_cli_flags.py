"""Every command line: engine flags defined once from EngineConfig (serve and batch never drift), help with
defaults on every flag, --version, and bad values refused with the choices before any model loads."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from trellis_jax import __version__
from trellis_jax.ablate.cli import build_parser as ablate_parser
from trellis_jax.batch import build_parser as batch_parser
from trellis_jax.engine import flags
from trellis_jax.engine.config import EngineConfig
from trellis_jax.generate import build_parser as generate_parser
from trellis_jax.router.__main__ import build_parser as router_parser
from trellis_jax.serve.__main__ import build_parser as serve_parser

PARSERS = {
    "trellis-serve": serve_parser,
    "trellis-batch": batch_parser,
    "trellis-generate": generate_parser,
    "trellis-ablate": ablate_parser,
    "trellis-router": router_parser,
}
BATCH_IO = ["--input", "in.jsonl", "--output", "out.jsonl"]
ENGINE_ARGV = [
    "--model",
    "tiny-llama",
    "--dtype",
    "float32",
    "--page-size",
    "8",
    "--max-num-seqs",
    "4",
    "--num-lookup-tokens",
    "3",
    "--prefill-saturation-tokens",
    "64",
    "--unroll-layers",
    "--no-materialise-head",
    "--no-compile-cache",
    "--kv-cache-dtype",
    "bfloat16",
    "--eviction-policy",
    "lfu",
    "--schedule-policy",
    "fcfs",
    "--chat-template",
    "t.jinja",
]


def test_every_engine_config_field_is_a_flag_or_says_why_not():
    names = {f.name for f in dataclasses.fields(EngineConfig)}
    options = flags.engine_options(serve_parser().parse_args([]))
    assert set(options) == names - set(flags.NOT_FLAGS)
    assert set(flags.NOT_FLAGS) <= names and all(flags.NOT_FLAGS.values())


def test_serve_and_batch_build_the_same_engine_config_from_the_same_flags():
    served = flags.engine_config(serve_parser().parse_args(ENGINE_ARGV))
    batched = flags.engine_config(batch_parser().parse_args(BATCH_IO + ENGINE_ARGV))
    assert served == batched
    assert (
        served.page_size,
        served.num_lookup_tokens,
        served.materialise_head,
        served.compile_cache_dir,
        served.kv_cache_dtype,
        served.chat_template,
    ) == (8, 3, False, None, "bfloat16", "t.jinja")


def test_flag_defaults_are_the_engine_configs_own(monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", "/tmp/xdg")
    monkeypatch.delenv("TRELLIS_PREPARED_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRELLIS_PREPARED_CACHE", raising=False)
    parsed = flags.engine_config(batch_parser().parse_args(BATCH_IO))
    assert parsed == dataclasses.replace(
        EngineConfig(),
        compile_cache_dir="/tmp/xdg/trellis-jax/xla",
        prepared_cache_dir="/tmp/xdg/trellis-jax/prepared",
    )


@pytest.mark.parametrize("prog", PARSERS)
def test_every_flag_has_help_that_shows_its_default(prog):
    parser = PARSERS[prog]()
    formatter = parser.formatter_class(prog)
    missing = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        text = formatter._expand_help(action) if action.help else ""
        if not text or ("default" not in text and not action.required):
            missing.append(action.option_strings[0])
    assert missing == []


@pytest.mark.parametrize("prog", PARSERS)
def test_version_names_the_command_and_the_release(prog, capsys):
    with pytest.raises(SystemExit) as exited:
        PARSERS[prog]().parse_args(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.strip() == f"{prog} (trellis-jax) {__version__}"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--eviction-policy", "lruu"], "cost_aware', 'fifo', 'lfu', 'lru'"),
        (["--schedule-policy", "lmp"], "choose from 'lpm', 'lpm-window'"),
        (["--dtype", "fp16"], "choose from 'auto', 'float32', 'bfloat16'"),
        (["--kv-cache-dtype", "int8"], "choose from 'auto', 'float32', 'bfloat16', 'float16'"),
        (["--kv-memory", "1GiB", "--num-pages", "64"], "at most one KV budget"),
        (["--max-num-seqs", "0"], "max_num_seqs"),
        (["--kv-prefetch", "2"], "kv_prefetch must be a fraction"),
        (["--matmul-backend", "gpu"], "choose from 'auto', 'native', 'xla'"),
    ],
)
def test_a_bad_engine_value_is_a_usage_error_listing_the_choices(argv, expected, capsys):
    from trellis_jax.batch import parse_args as batch_args
    from trellis_jax.serve.__main__ import parse_args as serve_args

    for parse in (serve_args, lambda a: batch_args(BATCH_IO + a)):
        with pytest.raises(SystemExit) as exited:
            parse(argv)
        assert exited.value.code == 2 and expected in capsys.readouterr().err


def test_the_engine_config_refuses_an_unknown_matmul_backend_from_python_too():
    with pytest.raises(ValueError, match="matmul_backend must be one of"):
        EngineConfig(matmul_backend="gpu")


def test_the_engine_config_refuses_an_unknown_eviction_policy_from_python_too():
    with pytest.raises(ValueError, match="unknown eviction policy 'lruu'"):
        EngineConfig(eviction_policy="lruu")


@pytest.mark.parametrize("name", ["trellis-serve", "trellis-batch", "trellis-generate"])
def test_prepared_cache_is_on_by_default_under_the_user_cache_and_can_be_turned_off(name, monkeypatch):
    from trellis_jax.cli import prepared_cache_dir

    extra = BATCH_IO if name == "trellis-batch" else ["--prompt", "hi"] if name == "trellis-generate" else []
    monkeypatch.setenv("XDG_CACHE_HOME", "/tmp/xdg")
    monkeypatch.delenv("TRELLIS_PREPARED_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRELLIS_PREPARED_CACHE", raising=False)
    assert prepared_cache_dir(PARSERS[name]().parse_args(extra)) == "/tmp/xdg/trellis-jax/prepared"
    assert prepared_cache_dir(PARSERS[name]().parse_args([*extra, "--no-prepared-cache"])) is None
    monkeypatch.setenv("TRELLIS_PREPARED_CACHE_DIR", "/tmp/chosen")
    assert prepared_cache_dir(PARSERS[name]().parse_args(extra)) == "/tmp/chosen"
    monkeypatch.setenv("TRELLIS_PREPARED_CACHE", "0")
    assert prepared_cache_dir(PARSERS[name]().parse_args(extra)) is None


def test_the_engine_config_carries_the_prepared_cache_dir(monkeypatch):
    monkeypatch.delenv("TRELLIS_PREPARED_CACHE", raising=False)
    args = serve_parser().parse_args(["--prepared-cache-dir", "/tmp/p"])
    assert flags.engine_config(args).prepared_cache_dir == "/tmp/p"
