"""CLI options: safe defaults, served model names, API keys from flags and the environment."""

from __future__ import annotations

import pytest

from trellis_jax.serve.__main__ import admin_api_keys_from, api_keys_from, engine_options, parse_args, served_name


def test_defaults_bind_loopback_on_8000_with_the_default_model():
    args = parse_args([])
    assert (args.host, args.port, args.model, args.api_key) == ("127.0.0.1", 8000, None, [])
    assert served_name(args) == "SmolLM2-135M-Instruct"
    assert engine_options(args)["model"] is None


def test_compile_cache_on_by_default_and_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", "/tmp/xdg")
    assert engine_options(parse_args([]))["compile_cache_dir"] == "/tmp/xdg/trellis-jax/xla"
    assert engine_options(parse_args(["--no-compile-cache"]))["compile_cache_dir"] is None


def test_served_name_from_model_path_or_flag():
    assert served_name(parse_args(["--model", "/models/Qwen2.5-0.5B.gguf"])) == "Qwen2.5-0.5B"
    assert served_name(parse_args(["--model", "/models/llama-dir/"])) == "llama-dir"
    assert served_name(parse_args(["--served-model-name", "mine"])) == "mine"


def test_api_keys_from_flags_and_environment():
    args = parse_args(["--api-key", "a", "--api-key", "b"])
    assert api_keys_from(args, {"TRELLIS_API_KEYS": "c, d,,a", "TRELLIS_API_KEY": "e"}) == ("a", "b", "c", "d", "e")
    assert api_keys_from(parse_args([]), {}) == ()


def test_admin_keys_from_flags_and_environment_apart_from_the_api_keys():
    args = parse_args(["--admin-api-key", "root", "--api-key", "a"])
    environ = {"TRELLIS_ADMIN_API_KEYS": "x, y", "TRELLIS_ADMIN_API_KEY": "z", "TRELLIS_API_KEY": "e"}
    assert admin_api_keys_from(args, environ) == ("root", "x", "y", "z")
    assert api_keys_from(args, environ) == ("a", "e")


def test_metrics_and_docs_are_closed_by_default_and_flags_open_them():
    assert (parse_args([]).public_metrics, parse_args([]).open_docs) == (False, False)
    args = parse_args(["--public-metrics", "--open-docs"])
    assert (args.public_metrics, args.open_docs) == (True, True)


def test_http_limits_have_bounded_defaults_and_refuse_nonsense(capsys):
    args = parse_args(["--body-read-timeout", "2.5", "--limit-concurrency", "64"])
    assert (args.body_read_timeout, args.limit_concurrency) == (2.5, 64)
    assert (parse_args([]).body_read_timeout, parse_args([]).limit_concurrency) == (30.0, 512)
    for bad in (["--body-read-timeout", "0"], ["--limit-concurrency", "1"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
        assert "must be" in capsys.readouterr().err


def test_materialised_head_is_automatic_unless_turned_off():
    assert engine_options(parse_args([]))["materialise_head"] is None
    assert engine_options(parse_args(["--no-materialise-head"]))["materialise_head"] is False


def test_kv_cache_dtype_defaults_to_the_models_and_passes_a_choice_through():
    from trellis_jax.engine.config import EngineConfig

    assert engine_options(parse_args([]))["kv_cache_dtype"] is None
    options = engine_options(parse_args(["--kv-cache-dtype", "bfloat16"]))
    assert options["kv_cache_dtype"] == "bfloat16"
    assert EngineConfig.from_options(**options).kv_cache_dtype == "bfloat16"


def test_engine_config_offers_exactly_the_kv_dtypes_the_runner_takes():
    from trellis_jax.engine.config import KV_CACHE_DTYPES
    from trellis_jax.model.config import KV_DTYPES

    assert KV_CACHE_DTYPES == (None, *KV_DTYPES)


def test_prefill_saturation_is_off_by_default_and_passes_a_value_through():
    from trellis_jax.engine.config import EngineConfig

    assert engine_options(parse_args([]))["prefill_saturation_tokens"] is None
    options = engine_options(parse_args(["--prefill-saturation-tokens", "64"]))
    assert EngineConfig(**options).prefill_saturation_tokens == 64


def test_lookup_decoding_is_off_by_default_and_passes_a_count_through():
    from trellis_jax.engine.config import EngineConfig

    assert EngineConfig(**engine_options(parse_args([]))).num_lookup_tokens == 0
    assert EngineConfig(**engine_options(parse_args(["--num-lookup-tokens", "3"]))).num_lookup_tokens == 3


def test_bad_lookup_settings_are_clear_errors():
    import pytest

    from trellis_jax.engine.config import EngineConfig

    with pytest.raises(ValueError, match="num_lookup_tokens"):
        EngineConfig(num_lookup_tokens=-1)
    with pytest.raises(ValueError, match="lookup_max_step_tokens"):
        EngineConfig(lookup_max_step_tokens=0)


def test_model_dtype_defaults_to_auto_and_can_be_pinned():
    assert engine_options(parse_args([]))["dtype"] == "auto"
    assert engine_options(parse_args(["--dtype", "float32"]))["dtype"] == "float32"


def test_waiting_queue_defaults_to_the_servers_rule_and_refuses_a_negative_depth(capsys):
    assert parse_args([]).max_waiting_requests is None
    assert parse_args(["--max-waiting-requests", "0"]).max_waiting_requests == 0
    with pytest.raises(SystemExit):
        parse_args(["--max-waiting-requests", "-1"])
    assert "must be >= 0" in capsys.readouterr().err
