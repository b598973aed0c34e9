"""What every command line shares: `new_parser(prog, description)` gives a parser with `--version` whose
help shows each flag's default; `add_model_flags` adds `--model` and `--dtype` (choices listed) and the
prepared-weight cache's `--prepared-cache-dir` / `--no-prepared-cache` (read back with
`prepared_cache_dir(args)`), the flags the engine CLIs and the reference generator have in common;
`add_compile_cache_flags` adds `--compile-cache-dir` / `--no-compile-cache` (`compile_cache_dir(args)`).
`default_prepared_cache_dir()`: $TRELLIS_PREPARED_CACHE_DIR, else <user cache>/trellis-jax/prepared (beside
the compile cache); None (off) when $TRELLIS_PREPARED_CACHE is 0/off/false/no.

Stdlib plus the dtype names only: importing it loads neither jax nor the engine.
"""

from __future__ import annotations

import argparse
import os

from trellis_jax import __version__
from trellis_jax.dtypes import DTYPE_CHOICES

_OFF = ("0", "off", "false", "no")
MODEL_HELP = "GGUF file, Hugging Face directory, orbax directory or preset name; default: SmolLM2-135M-Instruct"


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to a flag's help unless the help already states its default; on/off flags
    say "off"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text.lower()
            or action.default is argparse.SUPPRESS
            or not action.option_strings
            or action.required
        ):
            return text
        if action.nargs == 0:  # store_true / store_const
            return f"{text} (default: off)"
        if action.default is None or action.default == []:
            return f"{text} (default: none)"
        return f"{text} (default: %(default)s)"


class RawDescriptionDefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultsHelpFormatter):
    """Defaults shown, and the description's own line breaks kept (examples)."""


def new_parser(prog: str, description: str, *, raw_description: bool = False) -> argparse.ArgumentParser:
    formatter = RawDescriptionDefaultsHelpFormatter if raw_description else DefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s (trellis-jax) {__version__}")
    return parser


def add_model_flags(
    parser: argparse.ArgumentParser, *, dtype_default: str = "auto", dtype_help: str | None = None
) -> None:
    parser.add_argument("--model", default=None, help=MODEL_HELP)
    parser.add_argument(
        "--dtype",
        default=dtype_default,
        choices=DTYPE_CHOICES,
        help=dtype_help
        or (
            "model dtype; auto: bfloat16 where this machine computes it natively (GPUs, CPUs with AVX512_BF16), "
            "else float32"
        ),
    )
    parser.add_argument(
        "--prepared-cache-dir",
        default=default_prepared_cache_dir(),
        help="keep a GGUF model's loaded weights, config and tokenizer here, so the next start maps them "
        "instead of parsing and converting the file; past env TRELLIS_PREPARED_CACHE_MAX_BYTES (64GiB) the "
        "least recently used entries are deleted (default: %(default)s; env TRELLIS_PREPARED_CACHE_DIR)",
    )
    parser.add_argument(
        "--no-prepared-cache",
        action="store_true",
        help="load the model file every time, keep nothing (env TRELLIS_PREPARED_CACHE=0)",
    )


def default_prepared_cache_dir() -> str | None:
    if os.environ.get("TRELLIS_PREPARED_CACHE", "").strip().lower() in _OFF:
        return None
    chosen = os.environ.get("TRELLIS_PREPARED_CACHE_DIR")
    if chosen:
        return chosen
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "trellis-jax", "prepared")


def prepared_cache_dir(args: argparse.Namespace) -> str | None:
    """The directory the parsed flags ask for; None: no prepared-weight cache."""
    return None if args.no_prepared_cache else args.prepared_cache_dir


def default_compile_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "trellis-jax", "xla")


def add_compile_cache_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--compile-cache-dir",
        default=default_compile_cache_dir(),
        help="keep compiled step programs here so the next start skips compiling; past env "
        "TRELLIS_EXECUTABLE_CACHE_MAX_BYTES (8GiB) the least recently used code versions' programs are deleted "
        "(default: %(default)s)",
    )
    parser.add_argument("--no-compile-cache", action="store_true", help="compile from scratch, keep nothing")


def compile_cache_dir(args: argparse.Namespace) -> str | None:
    """The directory the parsed flags ask for; None: no persistent compile cache."""
    return None if args.no_compile_cache else args.compile_cache_dir
