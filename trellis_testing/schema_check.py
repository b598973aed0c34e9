"""A small JSON-schema checker for tests (no jsonschema package in the environment): the keywords the
structured-output tests use (type, properties, required, additionalProperties, items, minItems, maxItems,
enum, const, minimum, maximum, minLength, maxLength, anyOf). `problems(value, schema)` -> [] when it conforms."""

from __future__ import annotations

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def problems(value, schema: dict, path: str = "$") -> list[str]:
    if "anyOf" in schema:
        return [] if any(not problems(value, s, path) for s in schema["anyOf"]) else [f"{path}: matches no anyOf"]
    found = _type_problem(value, schema.get("type"), path)
    if found:
        return [found]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} not in enum"]
    if "const" in schema and value != schema["const"]:
        return [f"{path}: {value!r} != const"]
    out = _bounds(value, schema, path)
    if isinstance(value, dict):
        out += [f"{path}: missing {key!r}" for key in schema.get("required", []) if key not in value]
        props = schema.get("properties", {})
        for key, item in value.items():
            if key in props:
                out += problems(item, props[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                out.append(f"{path}: unexpected key {key!r}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += problems(item, schema["items"], f"{path}[{i}]")
    return out


def _type_problem(value, kind, path: str) -> str | None:
    if kind is None:
        return None
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, _TYPES[kind])
    return None if ok else f"{path}: {value!r} is not of type {kind}"


def _bounds(value, schema: dict, path: str) -> list[str]:
    checks = [
        ("minimum", lambda v, b: not isinstance(v, (int, float)) or v >= b),
        ("maximum", lambda v, b: not isinstance(v, (int, float)) or v <= b),
        ("minLength", lambda v, b: not isinstance(v, str) or len(v) >= b),
        ("maxLength", lambda v, b: not isinstance(v, str) or len(v) <= b),
        ("minItems", lambda v, b: not isinstance(v, list) or len(v) >= b),
        ("maxItems", lambda v, b: not isinstance(v, list) or len(v) <= b),
    ]
    return [
        f"{path}: violates {key}={schema[key]}" for key, ok in checks if key in schema and not ok(value, schema[key])
    ]
