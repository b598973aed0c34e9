"""Varied JSON schemas for structured-output checks: nested objects, enums, arrays, required keys.

`varied_schemas(count, seed)` -> `count` schemas, deterministic per seed. Every string, array and number is
bounded so a document always fits a modest max_tokens, even from a random model (tokens of one byte).
Only keywords `schema_check.problems` understands are used.
"""

from __future__ import annotations

import random


def varied_schemas(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [_object(rng, depth=0) for _ in range(count)]


def _object(rng: random.Random, depth: int) -> dict:
    names = rng.sample(["id", "name", "kind", "ok", "tags", "meta", "size", "code", "note", "level"], rng.randint(1, 3))
    properties = {name: _value(rng, depth + 1) for name in names}
    required = [name for name in names if rng.random() < 0.7] or names[:1]
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _value(rng: random.Random, depth: int) -> dict:
    kinds = ["string", "integer", "boolean", "enum", "null", "array"] + (["object"] if depth < 2 else [])
    kind = rng.choice(kinds)
    if kind == "string":
        return {"type": "string", "maxLength": rng.randint(1, 4)}
    if kind == "integer":
        low = rng.randint(-5, 5)
        return {"type": "integer", "minimum": low, "maximum": low + rng.randint(0, 50)}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "enum":
        return {"enum": rng.sample(["red", "green", "blue", 1, 2, True, None], rng.randint(1, 3))}
    if kind == "null":
        return {"type": "null"}
    if kind == "array":
        return {"type": "array", "items": _leaf(rng), "maxItems": rng.randint(0, 2)}
    return _object(rng, depth)


def _leaf(rng: random.Random) -> dict:
    return rng.choice(
        [{"type": "boolean"}, {"type": "integer", "minimum": 0, "maximum": 9}, {"enum": ["a", "b"]}, {"type": "null"}]
    )
