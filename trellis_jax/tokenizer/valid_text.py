"""Valid text: a str that UTF-8 can encode, i.e. one without lone surrogates ("\\ud800").

JSON may carry a lone surrogate as an escape and Python decodes it into a str, but no tokenizer can
encode it. `check_text` raises `TokenizerError` for such a str; `find_invalid_text` locates the first
one in a JSON-like value (dicts, lists, strings), so a server or batch job can name the bad field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import TokenizerError


def text_problem(text: str) -> str | None:
    """Why `text` is not valid Unicode, or None if it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return (
            f"holds a lone surrogate U+{ord(text[error.start]):04X} at character {error.start}; "
            "text must be valid Unicode (encodable as UTF-8)"
        )
    return None


def check_text(text: str, what: str = "text") -> None:
    problem = text_problem(text)
    if problem is not None:
        raise TokenizerError(f"{what} {problem}")


def find_invalid_text(value: Any, path: str = "") -> tuple[str, str] | None:
    """(path, problem) of the first string (or dict key) in `value` that is not valid Unicode, or None.
    Paths read like `messages[0].content`."""
    if isinstance(value, str):
        problem = text_problem(value)
        return None if problem is None else (path, problem)
    if isinstance(value, Mapping):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and text_problem(key) is not None:
                return path or "(key)", f"has a key that {text_problem(key)}"
            found = find_invalid_text(item, child)
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = find_invalid_text(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None
