"""Read a Hugging Face tokenizer directory: `tokenizer.json` (required), `tokenizer_config.json`
(chat template, bos/eos token strings, add_bos_token), `chat_template.jinja` / `chat_template.json`
(newer exports keep the template there), and `generation_config.json` (extra eos ids).
Returns plain data (`HFTokenizerFiles`); building the `Tokenizer` is tokenizer.py's job.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from .errors import TokenizerError


@dataclasses.dataclass(frozen=True)
class HFTokenizerFiles:
    source: str
    tokenizer: HFTokenizer
    config: dict[str, Any]
    chat_template: str | None
    generation_eos_ids: list[int]


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise TokenizerError(f"{path}: invalid JSON ({exc})") from exc


def _chat_template(directory: str, config: dict[str, Any]) -> str | None:
    jinja_path = os.path.join(directory, "chat_template.jinja")
    if os.path.isfile(jinja_path):
        with open(jinja_path, encoding="utf-8") as f:
            return f.read()
    json_path = os.path.join(directory, "chat_template.json")
    if os.path.isfile(json_path):
        return _read_json(json_path).get("chat_template")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = named.get("default")
    return template


def _generation_eos_ids(directory: str) -> list[int]:
    path = os.path.join(directory, "generation_config.json")
    if not os.path.isfile(path):
        return []
    eos = _read_json(path).get("eos_token_id")
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, list) else [eos])]


def read_hf_dir(directory: str | os.PathLike) -> HFTokenizerFiles:
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise TokenizerError(f"{directory}: not a directory")
    tokenizer_path = os.path.join(directory, "tokenizer.json")
    if not os.path.isfile(tokenizer_path):
        raise TokenizerError(
            f"{directory}: no tokenizer.json (only fast-tokenizer exports are supported; "
            "save one with transformers' tokenizer.save_pretrained)"
        )
    try:
        tokenizer = HFTokenizer.from_file(tokenizer_path)
    except Exception as exc:
        raise TokenizerError(f"{tokenizer_path}: cannot be loaded by `tokenizers` ({exc})") from exc
    config_path = os.path.join(directory, "tokenizer_config.json")
    config = _read_json(config_path) if os.path.isfile(config_path) else {}
    return HFTokenizerFiles(
        source=directory,
        tokenizer=tokenizer,
        config=config,
        chat_template=_chat_template(directory, config),
        generation_eos_ids=_generation_eos_ids(directory),
    )


def token_string(value: Any) -> str | None:
    """tokenizer_config.json writes special tokens as a string or as an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value
