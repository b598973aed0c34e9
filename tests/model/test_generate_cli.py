"""python -m trellis_jax.generate: JSON output, special-token parsing, chat wrapping, sampling."""

import json
import os
import subprocess
import sys

import pytest

from trellis_jax import generate
from trellis_jax.generate import generate_tokens, prompt_token_ids


def run_cli(capsys, *args):
    # no persistent compile cache: turning it on is process-wide and would change the rest of the session
    assert generate.main([*args, "--no-compile-cache"]) == 0
    return capsys.readouterr().out


def test_json_output_is_the_greedy_continuation(capsys, tiny_model, fixtures_dir):
    out = json.loads(
        run_cli(
            capsys,
            "--model",
            str(fixtures_dir / "tiny_llama"),
            "--prompt",
            "the cat sat",
            "--max-tokens",
            "6",
            "--json",
        )
    )
    loaded = tiny_model("llama")
    assert out["prompt_token_ids"] == loaded.tokenizer.encode("the cat sat")
    expected = generate_tokens(loaded, [out["prompt_token_ids"]], 6, stop_ids=loaded.tokenizer.eos_token_ids)[0]
    assert out["token_ids"] == expected
    assert out["text"] == loaded.tokenizer.decode(expected)


def test_prompt_special_tokens_are_parsed(tiny_model):
    tokenizer = tiny_model("llama").tokenizer
    ids = prompt_token_ids(tokenizer, "<|im_start|>user\nhi<|im_end|>", chat=False)
    assert ids[0] == tokenizer.token_to_id("<|im_start|>") and tokenizer.token_to_id("<|im_end|>") == ids[-1]


def test_chat_wraps_the_prompt_in_the_template(tiny_model):
    tokenizer = tiny_model("llama").tokenizer
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert prompt_token_ids(tokenizer, "hi", chat=True) == tokenizer.encode(rendered)


def test_sampling_is_seeded(tiny_model):
    loaded = tiny_model("llama")
    first = generate_tokens(loaded, [[5, 6, 7]], 8, temperature=1.5, seed=3)
    assert first == generate_tokens(loaded, [[5, 6, 7]], 8, temperature=1.5, seed=3)
    assert first != generate_tokens(loaded, [[5, 6, 7]], 8, temperature=1.5, seed=4)


def test_generation_stops_after_a_stop_token(tiny_model):
    loaded = tiny_model("llama")
    free = generate_tokens(loaded, [[5, 6, 7]], 6)[0]
    stopped = generate_tokens(loaded, [[5, 6, 7]], 6, stop_ids=[free[2]])[0]
    assert stopped == free[: free.index(free[2]) + 1]


def test_bad_arguments_are_rejected(capsys):
    with pytest.raises(SystemExit):
        generate.parse_args(["--prompt", "x", "--max-tokens", "0"])


def test_an_empty_prompt_is_a_one_line_error(capsys, fixtures_dir):
    assert generate.main(["--model", str(fixtures_dir / "tiny_llama"), "--prompt", "", "--no-compile-cache"]) == 2
    assert "non-empty prompts" in capsys.readouterr().err


def test_the_compile_cache_keeps_the_programs_for_the_next_run(tmp_path, fixtures_dir):
    argv = ["--model", str(fixtures_dir / "tiny_llama"), "--prompt", "hi", "--max-tokens", "2"]
    cache = tmp_path / "xla"
    done = subprocess.run(
        [sys.executable, "-m", "trellis_jax.generate", *argv, "--compile-cache-dir", str(cache)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert any(name.endswith("-cache") for name in os.listdir(cache))  # prefill and decode, stored
